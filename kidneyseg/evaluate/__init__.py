"""kidneyseg.evaluate"""
