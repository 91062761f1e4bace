"""kidneyseg.viewer"""
