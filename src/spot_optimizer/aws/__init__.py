"""spot_optimizer.aws"""
