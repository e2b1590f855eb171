"""Recipes that build or train the sample models (nothing is downloaded)."""
