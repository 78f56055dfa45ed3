"""Feature descriptors: what each input slot of a store (and of a model trained on one) MEANS.

A feature is a meaning, not a name: ``TAIR`` sampled from a grid and ``TAIR`` measured at a tower are two inputs,
and a slot named ``vegetation_type_11`` that holds latitude is not a vegetation type. Every store records one
:class:`Feature` per input slot (name, meaning from ``MEANINGS``, provenance from ``PROVENANCES``, unit); a
checkpoint carries the features of the store it was trained on. :func:`check_pairing` is the one place that decides
whether a model (or a transfer source) may be given a store's inputs.

Pairing rule: names in the same order, equal meaning, equal unit, and equal provenance, except that ``grid``,
``tower`` and ``metadata`` are three observations of the same place (the gap between a gridded product, a tower
instrument and a site's recorded description is the domain shift transfer learning exists to bridge) and pair
with each other. ``simulated``, ``derived``, ``constant`` and ``record`` pair only with themselves. A store or
checkpoint made before descriptors existed has provenance ``unknown`` and is refused: prepare (or train) it again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from xmw_ray.errors import XmwInputError

#: Provenance → what it says about a value.
PROVENANCES: dict[str, str] = {
    "grid": "sampled from a gridded product (TEM-MDM's forcing and maps) at the entity's cell",
    "tower": "measured at the tower (or a unit conversion of its measurements)",
    "metadata": "from the site's recorded description (metadata file or a user override)",
    "simulated": "output of a process model (TEM's NPP, `xmw simulate sites`' flux)",
    "derived": "computed from other inputs by an assumption or a rule (NPP = 0.5 x GPP, gap flags, solar season)",
    "constant": "one fill value for every entity (the quantity is not known)",
    "record": "a published global annual record, the same at every entity",
}
#: Provenance of a store or checkpoint written before descriptors existed: never paired.
UNKNOWN = "unknown"
#: Provenances that observe the same quantity of the same place and so pair with each other.
OBSERVED = frozenset({"grid", "tower", "metadata"})

#: The controlled vocabulary of base meanings (physical quantities and descriptors).
MEANINGS: dict[str, str] = {
    "precipitation": "precipitation",
    "shortwave_radiation": "incoming shortwave (solar) radiation",
    "air_temperature": "air temperature",
    "vapour_pressure": "water vapour pressure",
    "net_primary_productivity": "net primary productivity",
    "gross_primary_productivity": "gross primary productivity",
    "latent_heat_flux": "latent heat flux",
    "soil_temperature": "soil temperature",
    "ch4_flux": "wetland CH4 flux",
    "elevation": "surface elevation",
    "soil_texture_class": "FAO soil texture class",
    "tem_vegetation_class": "TEM vegetation cover class",
    "igbp_class": "IGBP land-cover class",
    "soil_ph": "soil pH",
    "soil_bulk_density": "topsoil bulk density",
    "vegetation_type_11": "11-class vegetation type",
    "latitude": "latitude",
    "absolute_latitude": "absolute latitude",
    "wetland_type": "wetland type class",
    "wetland_class": "wetland class from SITE_CLASSIFICATION",
    "climate_type": "climate type class of the gridded product",
    "koppen_class": "Koppen climate class",
    "atmospheric_ch4": "global annual-mean atmospheric CH4",
    "atmospheric_co2": "global annual-mean atmospheric CO2",
    "vegetation_presence": "presence of a vegetation type at the site",
    "day_length": "hours of daylight from latitude and day (solar declination)",
    "toa_shortwave_radiation": "daily-mean top-of-atmosphere shortwave from latitude and day",
    "sun_trend": "+1 while the noon sun climbs (spring half-year at the latitude), -1 while it sinks, 0 at the equator",
    # read only, in stores prepared before the season became solar (no longer written: hemisphere-blind)
    "day_of_year_sine": "sin(2 pi doy / 365)",
    "day_of_year_cosine": "cos(2 pi doy / 365)",
}
#: ``<base>/<qualifier>`` meanings: a trailing mean, a gap flag, or a one-hot/presence flag of a class.
_QUALIFIER = re.compile(r"trailing_mean_\d+d|gap_flag|is_[a-z0-9_]+")


def qualified(base: str, qualifier: str) -> str:
    """The meaning ``<base>/<qualifier>`` (e.g. ``air_temperature/trailing_mean_7d``)."""
    return f"{base}/{qualifier}"


def known_meaning(meaning: str) -> bool:
    base, sep, qualifier = meaning.partition("/")
    return base in MEANINGS and (not sep or bool(_QUALIFIER.fullmatch(qualifier)))


@dataclass(frozen=True)
class Feature:
    """One input slot: its name, what it means, where its values come from, and their unit."""

    name: str
    meaning: str
    provenance: str
    unit: str

    def describe(self) -> str:
        return f"{self.meaning} ({self.provenance}, {self.unit or 'no unit'})"

    def to_record(self) -> dict[str, str]:
        return {"name": self.name, "meaning": self.meaning, "provenance": self.provenance, "unit": self.unit}


def _feature(record: Any, where: str) -> Feature:
    if not isinstance(record, Mapping) or set(record) != {"name", "meaning", "provenance", "unit"} \
            or not all(isinstance(v, str) for v in record.values()):
        raise XmwInputError(f"{where}: malformed feature descriptor {record!r}")
    feature = Feature(**record)
    if feature.provenance == UNKNOWN:  # copied from a store prepared before descriptors (a Site store's --grid)
        return feature
    if feature.provenance not in PROVENANCES:
        raise XmwInputError(f"{where}: feature {feature.name!r} has unknown provenance {feature.provenance!r}")
    if not known_meaning(feature.meaning):
        raise XmwInputError(f"{where}: feature {feature.name!r} has unknown meaning {feature.meaning!r}")
    return feature


@dataclass(frozen=True)
class FeatureSet:
    """The dynamic and static input slots of a store or model, in slot order."""

    dynamic: tuple[Feature, ...]
    static: tuple[Feature, ...]

    @property
    def legacy(self) -> bool:
        """Whether this set was written before descriptors existed (every provenance ``unknown``)."""
        return any(f.provenance == UNKNOWN for f in (*self.dynamic, *self.static))

    def names(self, kind: str) -> tuple[str, ...]:
        return tuple(f.name for f in getattr(self, kind))

    def select(self, dynamic: tuple[int, ...], static: tuple[int, ...]) -> FeatureSet:
        """The slots at these indices, in this order."""
        return FeatureSet(tuple(self.dynamic[i] for i in dynamic), tuple(self.static[i] for i in static))

    def to_record(self) -> dict[str, list[dict[str, str]]]:
        """Plain JSON (and ``torch.load(weights_only=True)``) form."""
        return {"dynamic": [f.to_record() for f in self.dynamic], "static": [f.to_record() for f in self.static]}

    @classmethod
    def from_record(cls, record: Any, where: str) -> FeatureSet:
        """Parse ``to_record`` output; anything else is a one-line error naming ``where``."""
        if not isinstance(record, Mapping) or set(record) != {"dynamic", "static"} \
                or not all(isinstance(record[k], list) for k in ("dynamic", "static")):
            raise XmwInputError(f"{where}: malformed feature descriptors")
        return cls(tuple(_feature(r, where) for r in record["dynamic"]),
                   tuple(_feature(r, where) for r in record["static"]))

    @classmethod
    def of_store(cls, record: Any, dynamic_names: Iterable[str], static_names: Iterable[str],
                 where: str) -> FeatureSet:
        """A store's descriptors, checked against its variable names; a store without them (prepared before they
        existed) gets provenance ``unknown`` for every slot, which :func:`check_pairing` refuses."""
        dynamic_names, static_names = tuple(dynamic_names), tuple(static_names)
        if record is None:
            return cls(tuple(Feature(n, n, UNKNOWN, "") for n in dynamic_names),
                       tuple(Feature(n, n, UNKNOWN, "") for n in static_names))
        features = cls.from_record(record, where)
        if features.names("dynamic") != dynamic_names or features.names("static") != static_names:
            raise XmwInputError(f"{where}: feature descriptors do not name the store's variables")
        return features


def _pairs(a: Feature, b: Feature) -> bool:
    same_source = a.provenance == b.provenance or {a.provenance, b.provenance} <= OBSERVED
    return a.meaning == b.meaning and a.unit == b.unit and same_source


#: Indices of a store's dynamic and static slots that a model reads.
Slots = tuple[tuple[int, ...], tuple[int, ...]]


def select_slots(expected: FeatureSet | None, given: FeatureSet) -> Slots | None:
    """The slots of ``given`` a model built on ``expected`` reads, by name, when ``expected``'s names are a proper
    subset of ``given``'s in the same order (a map-ready model, trained on the Grid store's slots that towers supply
    without a grid, reading a Grid store); None when the names are equal or not such a subset (every slot is given,
    and :func:`check_pairing` then decides). Meanings are not looked at here: pair the selection afterwards."""
    if expected is None or expected.legacy:
        return None
    picks = []
    for kind in ("dynamic", "static"):
        want, have = expected.names(kind), given.names(kind)
        index = [have.index(n) for n in want if n in have]
        if len(index) != len(want) or index != sorted(index):
            return None
        picks.append(tuple(index))
    if all(len(p) == len(given.names(k)) for p, k in zip(picks, ("dynamic", "static"), strict=True)):
        return None
    return picks[0], picks[1]


def check_pairing(expected: FeatureSet | None, expected_as: str, given: FeatureSet | None, given_as: str,
                  hint: str = "") -> None:
    """Refuse, in one line naming the first differing feature, to give ``given``'s inputs to what was built on
    ``expected`` (a model's training store, or a transfer's source store). ``None`` means no descriptors at all
    (a checkpoint trained before they existed). ``hint`` ends the message (what to do)."""
    tail = f"; {hint}" if hint else ""
    if expected is not None and given is not None:
        for kind in ("dynamic", "static"):
            a, b = expected.names(kind), given.names(kind)
            if a != b:
                raise XmwInputError(f"{given_as}: {kind} variables {list(b)} differ from {expected_as} "
                                    f"({list(a)}){tail}")
    for side, where, what in ((expected, expected_as, "train it again"), (given, given_as, "prepare it again")):
        if side is None or side.legacy:
            raise XmwInputError(f"{where}: records no feature meanings (made before xmw recorded meaning, "
                                f"provenance and unit); {what}")
    assert expected is not None and given is not None
    bad = [(kind, a, b) for kind in ("dynamic", "static")
           for a, b in zip(getattr(expected, kind), getattr(given, kind), strict=True) if not _pairs(a, b)]
    if bad:
        kind, a, b = bad[0]
        more = f" (and {len(bad) - 1} more: {', '.join(x[2].name for x in bad[1:])})" if len(bad) > 1 else ""
        raise XmwInputError(f"{given_as}: {kind} feature {b.name!r} is {b.describe()} but {expected_as} has "
                            f"{a.describe()}{more}{tail}")


#: Meaning of each X-MethaneWet variable (``contract``) as the Grid store holds it.
CONTRACT_MEANINGS: dict[str, str] = {
    "PREC": "precipitation", "SOLR": "shortwave_radiation", "TAIR": "air_temperature", "VAPR": "vapour_pressure",
    "NPP": "net_primary_productivity", "clelev": "elevation", "clfaotxt": "soil_texture_class",
    "cltveg": "tem_vegetation_class", "phh2o": "soil_ph", "topsoil_bulk_density": "soil_bulk_density",
    "vegetation_type_11": "vegetation_type_11", "wetlandtype": "wetland_type", "climatetype": "climate_type",
    "CH4": "atmospheric_ch4", "CO2": "atmospheric_co2",
}


def grid_features() -> FeatureSet:
    """The Grid store's inputs: TEM-MDM's daily forcing and static maps (``grid``), TEM's monthly NPP
    (``simulated``) and the global annual CH4/CO2 record (``record``)."""
    from xmw_ray.data.contract import ANNUAL_VARS, DAILY_VARS, DYNAMIC_VARS, STATIC_VARS, UNITS

    def one(name: str) -> Feature:
        provenance = "record" if name in ANNUAL_VARS else "grid" if name in (*DAILY_VARS, *STATIC_VARS) \
            else "simulated"
        return Feature(name, CONTRACT_MEANINGS[name], provenance, UNITS[name])

    return FeatureSet(tuple(one(v) for v in DYNAMIC_VARS), tuple(one(v) for v in (*STATIC_VARS, *ANNUAL_VARS)))
