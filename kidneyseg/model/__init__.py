"""kidneyseg.model"""
