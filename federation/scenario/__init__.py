"""The synthetic MIT scenario: six partner datasets over one universe of companies and persons.

The scenario follows the Multidisciplinary Intervention Team (MIT) set-up: Politie, OM, FIOD,
Douane, Belastingdienst and KMar each hold their own registrations. Two views of every dataset
are produced:

- ``frames``: rows in the shared vocabulary and shared column names (the ground truth that
  pooled pandas answers are computed from);
- ``local_frames``: the same rows as the partner stores them, under its own column names and
  codes. The node configs written by :func:`write_scenario` map them back (docs/config.md).

Modules: ``vocabulary`` (shared domains, docs/vocabulary.md), ``datasets`` (what each partner
serves), ``generate`` (seeded data), ``truth`` (ground truth), ``configs`` (TOML configs),
``postgres`` (loading a partner into PostgreSQL) and ``write`` (everything to disk).
"""

from __future__ import annotations

from federation.scenario.configs import (
    COORDINATOR_COMMENT as COORDINATOR_COMMENT,
)
from federation.scenario.configs import (
    DEFAULT_FORMATS as DEFAULT_FORMATS,
)
from federation.scenario.configs import (
    DEMO_PROJECTS as DEMO_PROJECTS,
)
from federation.scenario.configs import (
    FORMATS as FORMATS,
)
from federation.scenario.configs import (
    MIN_GROUP_SIZE as MIN_GROUP_SIZE,
)
from federation.scenario.configs import (
    OPERATIONS as OPERATIONS,
)
from federation.scenario.configs import (
    coordinator_config as coordinator_config,
)
from federation.scenario.configs import (
    coordinator_document as coordinator_document,
)
from federation.scenario.configs import (
    dumps as dumps,
)
from federation.scenario.configs import (
    node_comment as node_comment,
)
from federation.scenario.configs import (
    node_configs as node_configs,
)
from federation.scenario.configs import (
    node_documents as node_documents,
)
from federation.scenario.datasets import (
    AIRPORT_CODES as AIRPORT_CODES,
)
from federation.scenario.datasets import (
    BD_REGION_CODES as BD_REGION_CODES,
)
from federation.scenario.datasets import (
    DATASETS as DATASETS,
)
from federation.scenario.datasets import (
    FIOD_FRAUD_CODES as FIOD_FRAUD_CODES,
)
from federation.scenario.datasets import (
    FLIGHT_CODES as FLIGHT_CODES,
)
from federation.scenario.datasets import (
    GOODS_CODES as GOODS_CODES,
)
from federation.scenario.datasets import (
    OM_PHENOMENON_CODES as OM_PHENOMENON_CODES,
)
from federation.scenario.datasets import (
    OM_STATUS_CODES as OM_STATUS_CODES,
)
from federation.scenario.datasets import (
    POLITIE_PHENOMENON_CODES as POLITIE_PHENOMENON_CODES,
)
from federation.scenario.datasets import (
    POLITIE_UNIT_CODES as POLITIE_UNIT_CODES,
)
from federation.scenario.datasets import (
    PORT_CODES as PORT_CODES,
)
from federation.scenario.datasets import (
    SECTOR_CODES as SECTOR_CODES,
)
from federation.scenario.datasets import (
    SPECS as SPECS,
)
from federation.scenario.datasets import (
    YES_NO_CODES as YES_NO_CODES,
)
from federation.scenario.datasets import (
    ColumnSpec as ColumnSpec,
)
from federation.scenario.datasets import (
    DatasetSpec as DatasetSpec,
)
from federation.scenario.datasets import (
    Scenario as Scenario,
)
from federation.scenario.errors import (
    ScenarioError as ScenarioError,
)
from federation.scenario.generate import (
    MIN_ROWS as MIN_ROWS,
)
from federation.scenario.generate import (
    NETWORK_COMPANIES as NETWORK_COMPANIES,
)
from federation.scenario.generate import (
    NETWORK_PERSONS as NETWORK_PERSONS,
)
from federation.scenario.generate import (
    generate as generate,
)
from federation.scenario.postgres import (
    load_postgres as load_postgres,
)
from federation.scenario.postgres import (
    postgres_available as postgres_available,
)
from federation.scenario.truth import (
    ground_truth_overlap as ground_truth_overlap,
)
from federation.scenario.vocabulary import (
    AIRPORTS as AIRPORTS,
)
from federation.scenario.vocabulary import (
    CONTROLLERS as CONTROLLERS,
)
from federation.scenario.vocabulary import (
    DOMAINS as DOMAINS,
)
from federation.scenario.vocabulary import (
    FLAG as FLAG,
)
from federation.scenario.vocabulary import (
    FLIGHT_TYPES as FLIGHT_TYPES,
)
from federation.scenario.vocabulary import (
    FRAUD_TYPES as FRAUD_TYPES,
)
from federation.scenario.vocabulary import (
    GOODS as GOODS,
)
from federation.scenario.vocabulary import (
    NODES as NODES,
)
from federation.scenario.vocabulary import (
    ORIGINS as ORIGINS,
)
from federation.scenario.vocabulary import (
    PHENOMENA as PHENOMENA,
)
from federation.scenario.vocabulary import (
    PORTS as PORTS,
)
from federation.scenario.vocabulary import (
    REGIONS as REGIONS,
)
from federation.scenario.vocabulary import (
    SECTORS as SECTORS,
)
from federation.scenario.vocabulary import (
    STATUSES as STATUSES,
)
from federation.scenario.vocabulary import (
    YEARS as YEARS,
)
from federation.scenario.write import (
    write_scenario as write_scenario,
)
