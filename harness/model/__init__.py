"""The FCN detector family: backbones, FPN, shared towers, predictors, assigners, losses.

Every row of the DeFCN and DATE tables is a config value of one detector (build.py).
"""
