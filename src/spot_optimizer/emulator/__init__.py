"""spot_optimizer.emulator"""
