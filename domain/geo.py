"""Great-circle distances: the one formula the API shows (``Station.distanceKm``) and the
SQLite store filters and sorts by, so a list ordered by distance reads in the order of
the distances it shows."""

from __future__ import annotations

import math

#: Mean earth radius (IUGG), km: every backend measures with it.
EARTH_RADIUS_KM = 6371.0088


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance in km: exact at a metre as at a continent (unlike the law of
    cosines, whose cosine of a few metres' angle is 1 to a double's resolution)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))
