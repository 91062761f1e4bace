"""kidneyseg.infer"""
