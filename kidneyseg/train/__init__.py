"""kidneyseg.train"""
