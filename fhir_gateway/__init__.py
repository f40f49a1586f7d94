"""fhir_gateway: the Welzijn op Recept referral gateway (FHIR R4 + HL7 v2)."""

__version__ = "0.1.0"
