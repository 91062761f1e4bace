"""kidneyseg.preprocess"""
