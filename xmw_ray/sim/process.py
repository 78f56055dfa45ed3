"""The reduced wetland-methane process model of the built-in world (equations in ``docs/process_model.md``).

Per cell and day, with air temperature T (°C), precipitation P (mm d⁻¹), shortwave S (W m⁻²), vapour pressure
e (hPa) and the year's CO2 (ppm):

- potential evapotranspiration (Priestley–Taylor, zero when T ≤ 0): ``PET = 1.26 Δ/(Δ+γ) R_n/λ`` with
  ``R_n = max(0, 0.6 S − 25)`` W m⁻², λ = 2.45 MJ kg⁻¹, γ = 0.066 kPa K⁻¹
- snow: precipitation falls as snow when T ≤ 0; melt ``= min(snow, 3 mm K⁻¹ d⁻¹ · max(T, 0))``
- water table z (mm, positive above the surface, a bucket):
  ``z ← clip(z + [(rain + melt)(1 + r_in) − ET − Q]/S_y, −1500, 500)``, ``ET = PET · clip(1 + z/400, 0.1, 1)``,
  ``Q = 0.05 z⁺ + 0.2 e^{min(z,0)/300}``, ``S_y = 1`` above the surface, the soil's specific yield below it
- NPP (g C m⁻² d⁻¹) from light, temperature and moisture:
  ``NPP = ε · fAPAR · 0.45 S·0.0864 · f_T · f_VPD · f_W · f_CO2`` with ε = 0.45 g C MJ⁻¹,
  ``f_T = clip((T+2)/22, 0, 1) · clip((45−T)/15, 0, 1)``, ``f_VPD = clip(1 − (VPD−10)/40, 0.3, 1)``,
  ``f_W = clip((z+1200)/900, 0.2, 1)``, ``f_CO2 = 1 + 0.45 ln(CO2/340)``
- substrate pool (lagged NPP): ``C ← C + (NPP − C)/τ_C``
- soil temperature lagging air temperature, insulated by snow:
  ``T_s ← T_s + (w T + (1−w)·0.5 − T_s)/τ_s``, ``w = e^{−snow/100 mm}`` (deep snow holds the soil just
  above freezing), τ_s = 8 d
- production (substrate-saturating, half-saturation K_C = 2 g C m⁻² d⁻¹):
  ``P_CH4 = R_0 · k · C/(C + K_C) · Q10^{(T_s − 15)/10} · f_pH · e^{−d/λ_wt} · clip(T_s, 0, 1)`` with the
  aerobic depth ``d = max(0, −z)`` mm, ``f_pH = e^{−((pH − 6.8)/5)²}`` and k the wetland-type (and, at a tower,
  site) multiplier; frozen soil (T_s ≤ 0) produces nothing
- oxidation rising with the aerobic depth: ``ox = 0.1 + 0.8 (1 − e^{−d/200 mm})``; emission ``E = P_CH4 (1 − ox)``
  in mg CH4 m⁻² d⁻¹ of wetland area.

The three parameters that differ between the simulator and the "true world" of the pseudo towers are Q10,
the water-table sensitivity λ_wt and the substrate lag τ_C (``SIMULATOR`` vs ``TRUE_WORLD``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from xmw_ray.data.fluxnet import saturation_vapour_pressure_hpa as saturation_vapour_pressure


@dataclass(frozen=True)
class ProcessParams:
    """Parameters of the process model; the first three are the ones the true world changes."""

    q10: float = 2.0
    wt_efold_mm: float = 250.0
    substrate_lag_d: float = 30.0
    t_ref: float = 15.0
    r0: float = 200.0
    soil_lag_d: float = 8.0
    substrate_half_sat: float = 2.0
    ox_min: float = 0.1
    ox_max: float = 0.9
    ox_depth_mm: float = 200.0
    lue: float = 0.45
    co2_beta: float = 0.45
    co2_ref: float = 340.0
    melt_rate: float = 3.0
    surface_outflow: float = 0.05
    base_flow: float = 0.2
    wt_min: float = -1500.0
    wt_max: float = 500.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


#: The simulator's parameters (the TEM-MDM stand-in).
SIMULATOR = ProcessParams()
#: The "true world" the pseudo towers observe: steeper temperature response, a water table that matters more,
#: a slower substrate pool. The difference is the sim-to-real gap transfer learning has to close.
TRUE_WORLD = replace(SIMULATOR, q10=3.0, wt_efold_mm=150.0, substrate_lag_d=60.0)

#: Production multiplier by wetland type (1 forested bog, 2 open bog/fen/wet tundra, 3 forested swamp,
#: 4 open swamp/marsh, 5 semi-arid floodplain swamp); index 0 is unused.
TYPE_PRODUCTION = np.array([0.0, 0.7, 1.0, 1.0, 1.3, 1.0])
#: Lateral inflow ratio (catchment water per unit of local rain) by wetland type; floodplains get the most.
TYPE_INFLOW = np.array([0.0, 0.3, 0.5, 0.8, 1.0, 3.0])


@dataclass(frozen=True)
class CellProps:
    """Static properties of the simulated cells or towers (all ``(n,)``)."""

    wetland_type: np.ndarray
    ph: np.ndarray
    specific_yield: np.ndarray
    fapar: np.ndarray
    scale: np.ndarray

    @property
    def inflow(self) -> np.ndarray:
        return TYPE_INFLOW[self.wetland_type.astype(np.int64)]


def cell_props(wetland_type: np.ndarray, ph: np.ndarray, specific_yield: np.ndarray, fapar: np.ndarray,
               site_effect: np.ndarray | None = None) -> CellProps:
    """Properties from maps; ``site_effect`` multiplies production (the towers' random effect)."""
    wtype = np.asarray(wetland_type, dtype=np.int64)
    scale = TYPE_PRODUCTION[wtype] * (1.0 if site_effect is None else np.asarray(site_effect))
    return CellProps(wetland_type=wtype, ph=np.asarray(ph, dtype=np.float64),
                     specific_yield=np.asarray(specific_yield, dtype=np.float64),
                     fapar=np.asarray(fapar, dtype=np.float64), scale=np.asarray(scale, dtype=np.float64))


@dataclass(frozen=True)
class Forcing:
    """Daily drivers, time-major ``(days, n)`` (one day is a contiguous row), and CO2 per day ``(days,)``."""

    tair: np.ndarray
    prec: np.ndarray
    solr: np.ndarray
    vapr: np.ndarray
    co2: np.ndarray

    @property
    def n_days(self) -> int:
        return self.tair.shape[0]


@dataclass
class State:
    """What carries from one day (and one year) to the next, ``(n,)`` float64 each."""

    soil_temp: np.ndarray
    water_table: np.ndarray
    substrate: np.ndarray
    snow: np.ndarray

    @classmethod
    def initial(cls, forcing: Forcing) -> State:
        """A neutral start (soil at the first day's air temperature, water table at the surface, no snow)."""
        n = forcing.tair.shape[1]
        return cls(soil_temp=forcing.tair[0].astype(np.float64), water_table=np.zeros(n),
                   substrate=np.full(n, 0.5), snow=np.zeros(n))

    def copy(self) -> State:
        return State(**{k: v.copy() for k, v in asdict(self).items()})


@dataclass(frozen=True)
class Result:
    """Daily outputs ``(days, n)`` float32: emission (mg CH4 m⁻² d⁻¹), NPP (g C m⁻² d⁻¹) and, on request,
    the diagnostics soil temperature (°C), water table (mm), evapotranspiration (mm d⁻¹)."""

    ch4: np.ndarray
    npp: np.ndarray
    soil_temp: np.ndarray | None = None
    water_table: np.ndarray | None = None
    et: np.ndarray | None = None


def potential_et(tair: np.ndarray, solr: np.ndarray) -> np.ndarray:
    """Priestley–Taylor potential evapotranspiration (mm d⁻¹), zero on freezing days."""
    t = np.asarray(tair, dtype=np.float32)
    es_kpa = 0.1 * saturation_vapour_pressure(t)
    delta = 4098.0 * es_kpa / (t + 237.3) ** 2
    rn = np.maximum(0.0, 0.6 * solr - 25.0)
    pet = 1.26 * delta / (delta + 0.066) * rn * (0.0864 / 2.45)
    return np.where(t > 0.0, pet, 0.0).astype(np.float32)


def potential_npp(forcing: Forcing, fapar: np.ndarray, params: ProcessParams) -> np.ndarray:
    """NPP (g C m⁻² d⁻¹) before the water limitation, ``(days, n)`` float32."""
    t = forcing.tair
    f_t = np.clip((t + 2.0) / 22.0, 0.0, 1.0) * np.clip((45.0 - t) / 15.0, 0.0, 1.0)
    vpd = np.maximum(saturation_vapour_pressure(t) - forcing.vapr, 0.0)
    f_vpd = np.clip(1.0 - (vpd - 10.0) / 40.0, 0.3, 1.0)
    f_co2 = 1.0 + params.co2_beta * np.log(np.asarray(forcing.co2, dtype=np.float64) / params.co2_ref)
    apar = (params.lue * 0.45 * 0.0864) * forcing.solr * fapar[None, :].astype(np.float32)
    return (apar * f_t * f_vpd * f_co2[:, None].astype(np.float32)).astype(np.float32)


def run(forcing: Forcing, props: CellProps, params: ProcessParams, state: State,
        diagnostics: bool = False) -> tuple[Result, State]:
    """Integrate the model over the forcing's days from ``state``; returns daily outputs and the end state."""
    n_days, n = forcing.tair.shape
    s = state.copy()
    pet = potential_et(forcing.tair, forcing.solr)
    pot = potential_npp(forcing, props.fapar, params)
    ch4 = np.empty((n_days, n), dtype=np.float32)
    npp_out = np.empty((n_days, n), dtype=np.float32)
    diag = {k: np.empty((n_days, n), dtype=np.float32) for k in ("soil_temp", "water_table", "et")} if diagnostics else {}
    inflow = 1.0 + props.inflow
    scale = params.r0 * props.scale * np.exp(-(((props.ph - 6.8) / 5.0) ** 2))
    sy = props.specific_yield
    ln_q10 = np.log(params.q10) / 10.0
    for d in range(n_days):
        t = forcing.tair[d].astype(np.float64)
        p = forcing.prec[d].astype(np.float64)
        # snow and the water-table bucket
        snowfall = np.where(t <= 0.0, p, 0.0)
        s.snow += snowfall
        melt = np.minimum(s.snow, params.melt_rate * np.maximum(t, 0.0))
        s.snow -= melt
        water_in = (p - snowfall + melt) * inflow
        z = s.water_table
        et = pet[d] * np.clip(1.0 + z / 400.0, 0.1, 1.0)
        outflow = params.surface_outflow * np.maximum(z, 0.0) + params.base_flow * np.exp(np.minimum(z, 0.0) / 300.0)
        z = np.clip(z + (water_in - et - outflow) / np.where(z > 0.0, 1.0, sy), params.wt_min, params.wt_max)
        s.water_table = z
        # vegetation and substrate
        npp = pot[d] * np.clip((z + 1200.0) / 900.0, 0.2, 1.0)
        s.substrate += (npp - s.substrate) / params.substrate_lag_d
        # soil temperature (snow insulates)
        w = np.exp(-s.snow / 100.0)
        s.soil_temp += (w * t + (1.0 - w) * 0.5 - s.soil_temp) / params.soil_lag_d
        ts = s.soil_temp
        # methane: production in the anoxic zone, oxidation in the aerobic one
        aerobic = np.maximum(-z, 0.0)
        prod = (scale * s.substrate / (s.substrate + params.substrate_half_sat) * np.exp(ln_q10 * (ts - params.t_ref)) * np.exp(-aerobic / params.wt_efold_mm)
                * np.clip(ts, 0.0, 1.0))
        ox = params.ox_min + (params.ox_max - params.ox_min) * (1.0 - np.exp(-aerobic / params.ox_depth_mm))
        ch4[d] = prod * (1.0 - ox)
        npp_out[d] = npp
        if diagnostics:
            diag["soil_temp"][d] = ts
            diag["water_table"][d] = z
            diag["et"][d] = et
    return Result(ch4=ch4, npp=npp_out, **diag), s


def spin_up(forcing: Forcing, props: CellProps, params: ProcessParams) -> State:
    """The state after one pass over ``forcing`` from the neutral start (the one-year spin-up)."""
    state = State.initial(forcing)
    state.substrate = potential_npp(forcing, props.fapar, params).mean(axis=0).astype(np.float64)
    return run(forcing, props, params, state)[1]
