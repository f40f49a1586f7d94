"""WoR profile validation: `Validator(ProfileSet.load(default_profiles_dir())).validate(resource)`."""

from fhir_gateway.validation.bsn import is_valid_bsn
from fhir_gateway.validation.profiles import ProfileError, ProfileSet
from fhir_gateway.validation.validator import Validator, default_profiles_dir

__all__ = ["ProfileError", "ProfileSet", "Validator", "default_profiles_dir", "is_valid_bsn"]
