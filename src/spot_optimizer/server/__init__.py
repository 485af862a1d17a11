"""spot_optimizer.server"""
