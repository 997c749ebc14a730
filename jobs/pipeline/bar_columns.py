"""The columns of a bar of market data, as the loader returns them and indicators read them."""

from __future__ import annotations

PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")  # prices: each must be > 0
OHLCV_COLUMNS: tuple[str, ...] = (*PRICE_COLUMNS, "volume")
