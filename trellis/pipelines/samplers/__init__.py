"""Flow-matching samplers (spec §10)."""
from .flow_euler import (FlowEulerCfgSampler, FlowEulerGuidanceIntervalSampler, FlowEulerSampler, SampleResult,
                         time_grid)

__all__ = ["FlowEulerSampler", "FlowEulerCfgSampler", "FlowEulerGuidanceIntervalSampler", "SampleResult",
           "time_grid"]
