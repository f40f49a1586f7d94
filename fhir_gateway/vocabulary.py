"""The WoR vocabulary: code systems and their codes, naming systems, extension and profile URLs,
the directory resource types and the Dutch time zone — each defined once, here.

Why one module: a code system written out in five modules drifts (one copy gets a typo, a new
milestone reaches the console but not the reports). Every other module imports from here, and
tests/unit/test_vocabulary.py checks this module against the CodeSystems in `profiles/` and fails
when a code-system or naming-system URL appears as a literal anywhere else in `fhir_gateway/`.
Mappings (`mappings/*.yaml`) are data and keep their own URLs.

Codes are plain `str` constants in one class per code system (not enums), so they compare, hash,
serialise and bind to SQL exactly like the literals they replace.
"""

from __future__ import annotations

from typing import Final
from zoneinfo import ZoneInfo

# -- time --------------------------------------------------------------------------------------

AMSTERDAM: Final = ZoneInfo("Europe/Amsterdam")
"""The zone of Dutch dates: a FHIR date's day, a zone-less v2 timestamp, report periods."""

# -- the directory (the social map) ------------------------------------------------------------

DIRECTORY_TYPES: Final = (
    "Organization",
    "HealthcareService",
    "Location",
    "Endpoint",
    "Practitioner",
    "PractitionerRole",
)
"""Resource types of the directory: public to every client, cached in memory by the router."""
PRACTICE_REGISTERED_TYPES: Final = ("Practitioner", "PractitionerRole")
"""Directory types a GP practice may also register for itself (a locum, a new colleague): such a
record is in the practice's compartment, not the public directory."""

# -- WoR canonical URLs --------------------------------------------------------------------------

WOR: Final = "https://wor.example.nl/fhir"
"""Canonical base of the WoR conformance resources (`profiles/`)."""

# WoR CodeSystems published in profiles/ (checked by tests/unit/test_vocabulary.py)
ACTIVITY_CATEGORIES: Final = f"{WOR}/CodeSystem/wor-activity-categories"
CATEGORY: Final = f"{WOR}/CodeSystem/wor-category"
CONSENT_SCOPE: Final = f"{WOR}/CodeSystem/wor-consent-scope"
FEEDBACK_KINDS: Final = f"{WOR}/CodeSystem/wor-feedback-kinds"
MILESTONES: Final = f"{WOR}/CodeSystem/wor-milestones"
REJECTION_REASONS: Final = f"{WOR}/CodeSystem/wor-rejection-reasons"
REMINDER_KINDS: Final = f"{WOR}/CodeSystem/wor-reminder-kinds"
TASK_OUTPUT: Final = f"{WOR}/CodeSystem/wor-task-output"

# WoR code systems the gateway uses but profiles/ does not (yet) publish
CHANNEL: Final = f"{WOR}/CodeSystem/channel"  # an extra AuditEvent subtype: "hl7v2"
REPORT_MEASURES: Final = f"{WOR}/CodeSystem/wor-report-measures"
POSITIVE_HEALTH_DIMENSIONS: Final = f"{WOR}/positive-health-dimension"
UNPUBLISHED_CODE_SYSTEMS: Final = frozenset({CHANNEL, REPORT_MEASURES, POSITIVE_HEALTH_DIMENSIONS})

# WoR extensions and profiles
COVERAGE_URL: Final = f"{WOR}/StructureDefinition/wor-coverage"
REGION_URL: Final = f"{WOR}/StructureDefinition/wor-region"
FEEDBACK_COMMUNICATION_PROFILE: Final = f"{WOR}/StructureDefinition/WorFeedbackCommunication"
SUBSCRIPTION_OWNER: Final = f"{WOR}/StructureDefinition/subscription-owner"
REPORT_MUNICIPALITY: Final = f"{WOR}/StructureDefinition/wor-report-municipality"
UNPUBLISHED_STRUCTURE_DEFINITIONS: Final = frozenset({SUBSCRIPTION_OWNER, REPORT_MUNICIPALITY})

MUNICIPALITY_REPORT_MEASURE: Final = f"{WOR}/Measure/wor-municipality-report"
# The gateway's own operation (its OperationDefinition is served at [base]/OperationDefinition/wor-report)
WOR_REPORT_OPERATION: Final = f"{WOR}/OperationDefinition/wor-report"

# Identifier systems the gateway mints itself
CLIENT_ID: Final = f"{WOR}/NamingSystem/client-id"

# FHIR message events of `$process-message` (the default MessageHeader.eventCoding of a reply)
MESSAGE_EVENTS: Final = "urn:wor"


class MessageEvent:
    """Codes of `MESSAGE_EVENTS`."""

    REFERRAL: Final = "referral"


# -- codes of the WoR code systems ---------------------------------------------------------------


class Milestone:
    """Codes of `MILESTONES` (Task.businessStatus); their order is `MILESTONE_ORDER`."""

    RECEIVED: Final = "received"
    CONTACT_ATTEMPTED: Final = "contact-attempted"
    INTAKE_PLANNED: Final = "intake-planned"
    INTAKE_HELD: Final = "intake-held"
    ACTIVITY_FOUND: Final = "activity-found"
    WAITLISTED: Final = "waitlisted"
    CLIENT_DECLINED: Final = "client-declined"
    NO_SHOW: Final = "no-show"
    CLOSED_GOAL_REACHED: Final = "closed-goal-reached"
    CLOSED_OTHER: Final = "closed-other"


MILESTONE_ORDER: Final = (
    Milestone.RECEIVED,
    Milestone.CONTACT_ATTEMPTED,
    Milestone.INTAKE_PLANNED,
    Milestone.INTAKE_HELD,
    Milestone.ACTIVITY_FOUND,
    Milestone.WAITLISTED,
    Milestone.CLIENT_DECLINED,
    Milestone.NO_SHOW,
    Milestone.CLOSED_GOAL_REACHED,
    Milestone.CLOSED_OTHER,
)
"""The milestones in the order of the loop (and of the CodeSystem): add a new one here too."""


class FeedbackKind:
    """Codes of `FEEDBACK_KINDS` (Communication.category of a feedback Communication)."""

    ACCEPTED: Final = "accepted"
    REJECTED: Final = "rejected"
    INTAKE_PLANNED: Final = "intake-planned"
    INTAKE_HELD: Final = "intake-held"
    ACTIVITY_FOUND: Final = "activity-found"
    NO_INTAKE_YET: Final = "no-intake-yet"
    COMPLETED: Final = "completed"
    CANCELLED: Final = "cancelled"
    QUESTION: Final = "question"


class ReminderKind:
    """Codes of `REMINDER_KINDS` (Communication.category of a notice the gateway itself sends)."""

    INTAKE_OVERDUE: Final = "intake-overdue"
    TRAJECTORY_OVERDUE: Final = "trajectory-overdue"
    ADDRESS_CHANGED: Final = "address-changed"


class ConsentScope:
    """Codes of `CONSENT_SCOPE`: what the patient lets the social domain see."""

    CONTACT_DETAILS: Final = "contact-details"
    SOCIAL_QUESTION: Final = "social-question"
    DIAGNOSIS_CODES: Final = "diagnosis-codes"
    CLINICAL_NOTES: Final = "clinical-notes"
    BSN: Final = "bsn"


class RejectionReason:
    """Codes of `REJECTION_REASONS` (Task.statusReason)."""

    OUT_OF_AREA: Final = "out-of-area"
    NO_CAPACITY: Final = "no-capacity"
    NOT_ELIGIBLE: Final = "not-eligible"
    INSUFFICIENT_INFORMATION: Final = "insufficient-information"
    CONSENT_MISSING: Final = "consent-missing"
    CLIENT_UNREACHABLE: Final = "client-unreachable"
    CLIENT_DECLINED: Final = "client-declined"
    DUPLICATE: Final = "duplicate"
    OTHER: Final = "other"
    CONSENT_WITHDRAWN: Final = "consent-withdrawn"


class Category:
    """Codes of `CATEGORY` (ServiceRequest/HealthcareService.category)."""

    SOCIAL_PRESCRIBING: Final = "social-prescribing"


class TaskOutput:
    """Codes of `TASK_OUTPUT` (Task.output.type of the Positive Health questionnaires)."""

    POSITIVE_HEALTH_INTAKE: Final = "positive-health-intake"
    POSITIVE_HEALTH_CLOSURE: Final = "positive-health-closure"


# The six Positive Health dimensions (QuestionnaireResponse.item.linkId), and which Task.output
# type holds the questionnaire of which moment.
PH_DIMENSIONS: Final = (
    "lichaamsfuncties",
    "mentaalWelbevinden",
    "zingeving",
    "kwaliteitVanLeven",
    "meedoen",
    "dagelijksFunctioneren",
)
PH_OUTPUT_CODES: Final = {
    TaskOutput.POSITIVE_HEALTH_INTAKE: "intake",
    TaskOutput.POSITIVE_HEALTH_CLOSURE: "closure",
}


class ActivityCategory:
    """Codes of `ACTIVITY_CATEGORIES` (Task.output.type of an activity the coach found)."""

    SPORT: Final = "sport"
    VOLUNTEERING: Final = "volunteering"
    CREATIVE: Final = "creative"
    SOCIAL_MEETING: Final = "social-meeting"
    HUISKAMER: Final = "huiskamer"
    EDUCATION: Final = "education"
    NATURE: Final = "nature"
    CULTURE: Final = "culture"
    PRACTICAL_SUPPORT: Final = "practical-support"
    OTHER: Final = "other"


CODES: Final[dict[str, type]] = {
    ACTIVITY_CATEGORIES: ActivityCategory,
    CATEGORY: Category,
    CONSENT_SCOPE: ConsentScope,
    FEEDBACK_KINDS: FeedbackKind,
    MILESTONES: Milestone,
    REJECTION_REASONS: RejectionReason,
    REMINDER_KINDS: ReminderKind,
    TASK_OUTPUT: TaskOutput,
}
"""Each published WoR code system → the class holding its codes (what the test checks)."""


def codes_of(system: type) -> dict[str, str]:
    """The code constants of one code-system class: {"INTAKE_HELD": "intake-held", …}."""
    return {name: value for name, value in vars(system).items() if name.isupper() and isinstance(value, str)}


# -- Dutch naming systems (identifiers and codes of the Dutch healthcare infrastructure) ----------

BSN: Final = "http://fhir.nl/fhir/NamingSystem/bsn"
AGB: Final = "http://fhir.nl/fhir/NamingSystem/agb-z"
URA: Final = "http://fhir.nl/fhir/NamingSystem/ura"
UZI: Final = "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers"
BIG: Final = "http://fhir.nl/fhir/NamingSystem/big"
# A GP practice is recognised by the Dutch organisation type (RoleCodeNL) "Z3 Huisartspraktijk".
ORGANIZATION_TYPE_NL: Final = "http://nictiz.nl/fhir/NamingSystem/organization-type"
ICPC: Final = "http://hl7.org/fhir/sid/icpc-1-nl"

# -- HL7 FHIR core: extensions, canonical bases and code systems ---------------------------------

CORE_STRUCTURE_DEFINITION: Final = "http://hl7.org/fhir/StructureDefinition/"
CORE_VALUE_SET: Final = "http://hl7.org/fhir/ValueSet/"
DATA_ABSENT_REASON: Final = CORE_STRUCTURE_DEFINITION + "data-absent-reason"
HOUSE_NUMBER_URL: Final = CORE_STRUCTURE_DEFINITION + "iso21090-ADXP-houseNumber"
ISSUE_TYPE: Final = "http://hl7.org/fhir/issue-type"
RESTFUL_INTERACTION: Final = "http://hl7.org/fhir/restful-interaction"

# Subscriptions R5 Backport IG (R4 Subscriptions with topic-based notifications)
BACKPORT: Final = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
BACKPORT_PAYLOAD_CONTENT: Final = BACKPORT + "backport-payload-content"
BACKPORT_HEARTBEAT_PERIOD: Final = BACKPORT + "backport-heartbeat-period"
BACKPORT_TIMEOUT: Final = BACKPORT + "backport-timeout"
BACKPORT_SUBSCRIPTION_STATUS: Final = BACKPORT + "backport-subscription-status-r4"
BACKPORT_FILTER_CRITERIA: Final = BACKPORT + "backport-filter-criteria"
BACKPORT_TOPIC_CANONICAL: Final = BACKPORT + "capabilitystatement-subscriptiontopic-canonical"
# The one topic the gateway offers (Backport IG, topic-based): Tasks of a worklist; the filter
# criteria (`backport-filter-criteria`) are a Task search, e.g. `Task?owner=...&status=requested`
WORKLIST_TOPIC: Final = f"{WOR}/SubscriptionTopic/worklist"

# -- HL7 terminology (THO) and other external code systems ---------------------------------------

_THO: Final = "http://terminology.hl7.org/CodeSystem/"
AUDIT_ENTITY_TYPE: Final = _THO + "audit-entity-type"
AUDIT_EVENT_TYPE: Final = _THO + "audit-event-type"
DATA_OPERATION: Final = _THO + "v3-DataOperation"
ENDPOINT_CONNECTION_TYPE: Final = _THO + "endpoint-connection-type"
MEASURE_IMPROVEMENT_NOTATION: Final = _THO + "measure-improvement-notation"
MEASURE_POPULATION: Final = _THO + "measure-population"
OBJECT_ROLE: Final = _THO + "object-role"
OBSERVATION_VALUE: Final = _THO + "v3-ObservationValue"
PARTICIPATION_TYPE: Final = _THO + "v3-ParticipationType"
PROVENANCE_PARTICIPANT_TYPE: Final = _THO + "provenance-participant-type"
SECURITY_SOURCE_TYPE: Final = _THO + "security-source-type"
DCM: Final = "http://dicom.nema.org/resources/ontology/DCM"
UCUM: Final = "http://unitsofmeasure.org"

# -- SMART on FHIR discovery in the CapabilityStatement (rest.security) ---------------------------

RESTFUL_SECURITY_SERVICE: Final = _THO + "restful-security-service"
SMART_ON_FHIR: Final = "SMART-on-FHIR"  # the code of RESTFUL_SECURITY_SERVICE
OAUTH_URIS: Final = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
"""SMART's extension on `rest.security` naming the token endpoint (sub-extension `token`)."""
