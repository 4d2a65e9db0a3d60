"""trajectory: is the linearity of a transformer's FFN blocks learned, or fixed by the architecture?"""

__version__ = "0.1.0"
