"""spot_optimizer.agent"""
