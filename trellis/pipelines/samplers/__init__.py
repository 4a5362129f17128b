"""Flow-matching samplers (spec §10; TRELLIS.2 facts §4)."""
from .flow_euler import (FlowEulerCfgSampler, FlowEulerGuidanceIntervalSampler, FlowEulerSampler, SampleResult,
                         time_grid)
from .guidance import Guidance, resolve_guidance

__all__ = ["FlowEulerSampler", "FlowEulerCfgSampler", "FlowEulerGuidanceIntervalSampler", "SampleResult",
           "time_grid", "Guidance", "resolve_guidance"]
