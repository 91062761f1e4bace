"""kidneyseg.data"""
