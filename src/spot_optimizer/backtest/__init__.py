"""spot_optimizer.backtest"""
