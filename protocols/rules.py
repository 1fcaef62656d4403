"""Every rule a ``FederationError`` can name, with its one-line meaning.

A refusal or error names its rule (machine-readable) and a reason (for people). This is the one
list of rules: docs/security.md shows it, and tests/unit/test_rules.py checks that every rule
string the code base raises is listed here. Add a rule here when you introduce one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

RULE_NAME = re.compile(r"[a-z][a-z0-9_]*")

_RULES: dict[str, dict[str, str]] = {
    "node job path": {
        "unsupported_job": "the node does not run this kind of job",
        "internal_error": "the job failed inside the node in a way no rule foresaw; nothing was released",
        "ledger_unavailable": "the node's budget ledger or state store cannot be read or written",
        "malformed_request": "a job or protocol message is incomplete or inconsistent",
        "source_unavailable": "the dataset's source (file or database) cannot be read",
        "secure_required": "the dataset is released only under secure aggregation",
        "differencing": "an exact release would isolate units by differencing with earlier releases",
        "differencing_unavailable": "the differencing record cannot be read or written; exact release refused",
    },
    "query validation": {
        "unknown_dataset": "no node (or not this node) serves the named dataset",
        "dataset_not_exposed": "the dataset is not served by this node",
        "unknown_column": "the column is not declared for the dataset",
        "identifier_column": "identifier columns cannot be filtered, grouped on or released",
        "type_mismatch": "a filter compares a numeric column with something other than a number",
        "value_outside_domain": "a value is outside the column's public domain",
        "unsupported_filter": "the filter uses a comparison the column's kind does not allow",
        "operation_not_allowed": "the aggregate is not allowed by the dataset's policy",
        "not_groupable": "the column cannot be grouped on (only category columns can)",
        "not_numeric": "SUM/AVG need a numeric column with declared bounds",
        "too_many_groups": "the query would produce more groups than the policy allows",
        "malformed_sql": "the SQL text cannot be parsed",
        "raw_rows": "the query would return raw rows instead of aggregates",
        "unsupported_aggregate": "the aggregate function is not one of COUNT, COUNT(DISTINCT unit), SUM, AVG",
        "unsupported_clause": "the SQL uses a clause outside the supported subset",
        "unsupported_expression": "the SQL uses an expression outside the supported subset",
    },
    "privacy and budgets": {
        "privacy_request": "epsilon, rho or delta is not a finite positive number within policy",
        "epsilon_cap": "the requested epsilon (or rho) is above the dataset's per-query cap",
        "budget": "the project's privacy budget for the dataset is exhausted or not set",
        "budget_value": "a budget an officer sets must be a finite positive epsilon and a delta in (0, 1)",
        "job_id_reused": "the ledger already holds a different charge under this job id",
        "ledger_busy": "the budget ledger stayed locked too long",
        "epsilon_value": "an epsilon passed to the accountant is not finite and positive",
        "rho_value": "a rho passed to the accountant is not finite and positive",
        "delta_value": "a delta passed to the accountant is not in (0, 1)",
        "cost_value": "a privacy cost is negative or not finite",
        "aggregate_kind": "the noise planner was given an unknown aggregate kind",
        "aggregates": "the noise planner was given no aggregates",
        "bounds": "numeric bounds are missing, not finite, or not lower < upper",
        "n_groups": "the number of groups is not a whole number >= 1",
        "n_nodes": "the number of nodes is not a whole number >= 1",
        "trusted_nodes": "the number of nodes trusted to add their noise share is out of range",
        "mechanism": "the noise mechanism is not laplace or gaussian",
        "noise_kind": "the noise kind is not one OpenDP offers here",
        "noise_scale": "a noise scale is not finite and positive",
        "dp_input": "values handed to a DP mechanism are not finite integers in range",
        "fixed_point": "a fixed-point scale is not finite and positive",
        "interval_level": "a confidence level is not in (0, 1)",
        "min_group_size": "the minimum group size is not a whole number >= 1",
        "threshold_p": "the suppression threshold probability is not in (0, 1)",
        "threshold_parts": "a combined suppression threshold was asked for without any noisy part",
        "units_missing": "the release needs distinct-unit counts that were not computed",
        "max_rows_per_unit": "max_rows_per_unit is not a whole number >= 1",
    },
    "secure aggregation": {
        "secure_min_nodes": "fewer nodes take part than the secure aggregation needs",
        "suppression_node": "the dataset's policy requires node-level suppression, which a secure sum cannot give",
        "min_nodes": "fewer nodes remained in the sum than required",
        "secure_unsupported": "a node announces no secure-aggregation key",
        "secure_config": "the secure job's ring size or roster is not what this node runs",
        "secure_layout": "the vector layout of a secure job differs between nodes or from the plan",
        "secure_layout_mismatch": "a node's secure answer has a different layout from the others",
        "secure_protocol": "a node answered a secure round out of protocol",
        "secure_malformed": "a secure step carries malformed bytes or values",
        "secure_job_id": "a secure job id is empty or malformed",
        "secure_duplicate": "a secure job with this id is already running",
        "secure_busy": "the node already runs its maximum number of secure jobs",
        "secure_unknown_job": "no running secure job has this id (unknown or expired)",
        "secagg_key_invalid": "the node's SecAgg signing key file is not a valid key",
        "secagg_config": "the SecAgg parameters (threshold, neighbours, dimension) are invalid",
        "secagg_threshold": "too many participants dropped out for the sum to be recovered",
        "secagg_inconsistent": "the roster or keys differ from what this participant knows",
        "secagg_unknown_node": "a SecAgg message names a participant outside the roster",
        "secagg_wrong_job": "a SecAgg message belongs to another job",
        "secagg_wrong_round": "a SecAgg message arrived in the wrong round",
        "secagg_malformed": "a SecAgg message does not decode",
        "secagg_bad_signature": "a SecAgg advertisement's signature does not verify",
        "secagg_bad_share": "a Shamir share or encrypted share does not check out",
        "secagg_duplicate": "a participant sent the same SecAgg message twice",
        "secagg_misrouted": "a SecAgg message was routed to the wrong participant",
        "secagg_input": "a masked input has the wrong shape or type",
        "shamir_share": "a Shamir share is malformed",
        "shamir_secret": "a Shamir secret is out of range",
        "shamir_points": "Shamir shares repeat an evaluation point",
        "shamir_threshold": "a Shamir threshold is out of range",
        "shamir_inconsistent": "Shamir shares do not lie on one polynomial",
        "fixed_point_bits": "the fixed-point ring size is not supported",
        "fixed_point_range": "a fixed-point range is empty or not finite",
        "fixed_point_scale": "a fixed-point scale is not finite and positive",
        "fixed_point_parties": "the number of parties does not fit the fixed-point ring",
        "fixed_point_overflow": "a sum would overflow the fixed-point ring",
        "fixed_point_shape": "fixed-point vectors differ in shape",
        "fixed_point_dtype": "fixed-point input has the wrong data type",
        "fixed_point_codec_required": "real-valued SecAgg inputs need a fixed-point codec",
    },
    "entity overlap": {
        "set_too_small": "a party's identifier set is below the policy's minimum size",
        "set_too_large": "a party's identifier set is above the policy's maximum size",
        "identifier_not_allowed": "the identifier column may not take part in overlaps of the dataset",
        "not_identifier": "an overlap is on an identifier column only",
        "id_type_mismatch": "the datasets' overlap columns hold different identifier types",
        "identifier_type": "the identifier type is not one the federation normalises",
        "overlap_unit": "an intersection sum needs the overlap column to be the base's privacy unit",
        "value_bounds": "an intersection sum needs non-negative bounded values",
        "sum_capacity": "the intersection sum does not fit the Paillier plaintext",
        "sum_integrity": "the intersection sum does not decode consistently",
        "category_domain": "a category is outside the sum's public domain",
        "ciphertext_format": "a Paillier ciphertext is malformed",
        "key_size": "a Paillier key is too small or malformed",
        "protocol": "a node answered an overlap step with something else",
        "protocol_order": "an overlap or PSI step came out of order",
        "hop_integrity": "a sealed hop does not open with this party's key",
        "token_format": "a blinded token list is malformed",
        "token_group": "a token is not a valid group element",
        "hash_to_group": "an identifier could not be hashed to the group",
        "duplicate_identifier": "a party's set lists an identifier twice",
        "duplicate_token": "a blinded set lists a token twice",
        "identifier": "an identifier is not a string",
        "job_id": "a PSI job id is empty",
        "party_id": "a PSI party id is empty",
        "parties": "PSI needs at least two parties",
        "ring": "the PSI ring does not list every party exactly once",
        "randomness": "the random source failed; nothing was shuffled",
        "threshold": "k for an at-least-k overlap is out of range",
        "malformed_result": "an overlap result is inconsistent",
        "node_unreachable": "a node needed by the job is not connected",
        "node_disconnected": "a node disconnected during the job",
        "timeout": "a node or the coordinator did not answer in time",
    },
    "projects and approvals": {
        "unknown_project": "the project is not registered at the coordinator",
        "project_expired": "the project's end date has passed",
        "not_a_member": "the analyst is not a member of the project",
        "project_not_allowed": "the dataset's policy does not allow this project",
        "purpose_not_allowed": "the dataset's policy does not allow this purpose",
        "approval_required": "the job needs this node's privacy officer's approval",
        "approvals_unavailable": "the node's approval store cannot be read",
        "quorum_not_met": "too few nodes approved the job",
        "already_approved": "the job or template is already approved",
        "not_approved": "there is no approval to revoke",
        "bad_hash": "a job or template hash is malformed",
        "bad_scope": "an approval scope is not 'job' or 'template'",
    },
    "audit": {
        "audit": "the audit log failed verification",
        "audit_unavailable": "the audit entry could not be made durable; nothing was released",
        "audit_corrupt": "the audit log's last entry is unreadable or foreign",
        "audit_unreadable": "the audit log cannot be read",
        "audit_missing": "the audit log does not exist",
        "audit_entry": "an audit entry is malformed",
        "audit_entry_too_large": "an audit entry is larger than the log accepts",
        "audit_job_id": "an audit entry's job id is malformed",
        "audit_kind": "an audit entry's kind is malformed",
        "audit_node_id": "the audit log's node id is malformed",
        "audit_payload": "an audit entry's payload is not plain JSON",
        "audit_key": "an audit key is missing, malformed, exposed or mismatched",
        "audit_key_invalid": "an audit key file does not hold a valid key",
        "audit_key_io": "an audit key file cannot be read or written",
        "audit_key_mismatch": "the audit verify key does not belong to the signing key",
        "audit_key_permissions": "the audit signing key is readable by others",
    },
    "identity, transport and service": {
        "tls_required": "TLS is not configured and development mode was not asked for",
        "tls_config": "the TLS certificate kit is incomplete",
        "unknown_ca": "the certificate is not issued by the federation's root",
        "expired": "the certificate has expired",
        "not_yet_valid": "the certificate is not valid yet",
        "revoked": "the certificate is revoked",
        "wrong_role": "the certificate's role does not allow this use",
        "wrong_identity": "the node's certificate names another node",
        "no_certificate": "the peer presented no certificate",
        "bad_certificate": "a certificate cannot be parsed",
        "bad_crl": "the certificate revocation list cannot be parsed or verified",
        "no_root": "no federation root exists yet",
        "exists": "the PKI object already exists",
        "not_found": "the PKI object does not exist",
        "bad_subject": "a certificate subject is malformed",
        "bad_role": "a certificate role is unknown",
        "bad_host": "a host name is malformed",
        "bad_reason": "a revocation reason is unknown",
        "bad_days": "a validity period is out of range",
        "bad_index": "the PKI index file is not valid",
        "pki_files": "a file of the PKI folder cannot be read or written",
        "rate_limited": "the analyst sent more queries per minute than allowed",
        "not_authorised": "the coordinator refused this identity",
        "oversized_request": "the request is larger than the coordinator accepts",
        "coordinator_unreachable": "the coordinator cannot be reached",
        "coordinator_error": "the coordinator answered with a transport error",
        "refused": "a node or the coordinator refused without naming a rule",
    },
    "configuration and tools": {
        "config": "a config file is malformed or inconsistent",
        "config_missing": "the config file does not exist",
        "bad_input": "a command-line argument is invalid",
        "startup_failed": "a federation process exited during start-up",
        "startup_timeout": "a federation process did not come up in time",
        "demo": "the demo's tour did not behave as expected",
        "mock_rows_limit": "mock data rows are out of range",
        "coordinator_address": "the scenario's coordinator address is malformed",
        "dataset_known": "the scenario names an unknown dataset",
        "datasets_maximum": "the scenario lists too many datasets",
        "datasets_nonempty": "the scenario lists no datasets",
        "format_known": "the scenario names an unknown file format",
        "node_known": "the scenario names an unknown partner",
        "overlap_column": "the scenario names an unknown overlap column",
        "pg_schema_identifier": "the PostgreSQL schema name is not a plain identifier",
        "postgres_dsn_required": "the scenario needs a PostgreSQL DSN",
        "postgres_reachable": "PostgreSQL is not reachable",
        "rows_minimum": "the scenario asks for too few rows",
        "seed_nonnegative_int": "the scenario's seed is not a whole number >= 0",
        "toml_finite": "a value written to TOML is not finite",
        "toml_type": "a value cannot be written to TOML",
    },
}

GROUPS: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {group: MappingProxyType(rules) for group, rules in _RULES.items()}
)
RULES: Mapping[str, str] = MappingProxyType(
    {rule: meaning for rules in _RULES.values() for rule, meaning in rules.items()}
)


def meaning(rule: str) -> str:
    """The one-line meaning of ``rule`` ("" for a rule not in the registry)."""
    return RULES.get(rule, "")


def markdown_table() -> str:
    """The registry as the Markdown table docs/security.md shows."""
    lines = ["| area | rule | meaning |", "|---|---|---|"]
    for group, rules in GROUPS.items():
        for rule, text in sorted(rules.items()):
            lines.append(f"| {group} | `{rule}` | {text} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
