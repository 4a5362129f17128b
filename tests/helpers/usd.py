"""usd-core's own checks of a stage, for the tests of the USDZ files."""


def usd_problems(stage) -> list:
    """(severity name, message) of every finding of all of usd-core's registered validators on ``stage``."""
    from pxr import UsdValidation
    context = UsdValidation.ValidationContext(UsdValidation.ValidationRegistry().GetOrLoadAllValidators())
    return [(e.GetType().displayName, e.GetErrorAsString()) for e in context.Validate(stage)]
