"""Planners: the bind-time UDFs behind the macros, turning the macro's arguments into SQL.

Each takes the arguments as text (see macros.sql), checks them with ``arguments``, resolves
the model with the shared preparation in ``prepare``, and returns SQL from ``plans``. Nothing
here reads the user's table: the returned SQL does, in the caller's context.
"""

from __future__ import annotations

import json

from .. import arguments, fitting, prepare, summary
from ..settings import make_config
from . import plans
from .registration import Instance, require_registered


def plan_impute(instance: Instance, cursor, table, model, seed, draws, imputations) -> str:
    prepared = prepare.impute(
        cursor,
        arguments.text("tbl", table),
        model,
        seed=arguments.seed(seed),
        draws=arguments.draws(draws),
        imputations=arguments.imputations(imputations, draws),
        model_dir=instance.model_dir,
    )
    impute_name, _ = require_registered(instance, prepared.model)
    return plans.impute_sql(prepared, impute_name)


def plan_synthesize(instance: Instance, cursor, model, n, seed, given) -> str:
    prepared = prepare.synthesize(
        cursor,
        arguments.text("model", model),
        n=arguments.row_count(n),
        seed=arguments.seed(seed),
        given=given,
        model_dir=instance.model_dir,
    )
    _, synth_name = require_registered(instance, prepared.model)
    return plans.synthesize_sql(prepared, synth_name)


def plan_train(
    instance: Instance,
    cursor,
    table,
    model,
    seed,
    max_seconds,
    settings,
    categorical,
    passthrough,
    epsilon,
    delta,
) -> str:
    chosen = arguments.settings(settings)
    chosen["seed"] = arguments.seed(seed)
    budget = arguments.seconds(max_seconds)
    if budget is not None:
        chosen["max_seconds"] = budget
    for name, value in (("epsilon", epsilon), ("delta", delta)):
        if value is not None:
            chosen[name] = arguments.number(name, value)
    chosen.setdefault("progress", False)
    columns = {
        "categorical": arguments.column_names("categorical", categorical),
        "passthrough": arguments.column_names("passthrough", passthrough),
    }
    config = make_config(chosen)  # every setting checked now, before any row is read
    source, name = prepare.source_and_name(arguments.text("tbl", table), model)
    fitting.check_can_train(cursor, instance.model_dir)
    return plans.train_sql(
        name=name,
        source=source.text,
        settings_json=json.dumps({**chosen, **{k: v for k, v in columns.items() if v}}),
        model_dir=instance.model_dir,
        inputs=fitting.inputs_sql(source.sql, config.max_rows, config.seed),
    )


def plan_models(instance: Instance, cursor, listing) -> str:
    return summary.values_sql(prepare.model_summaries(cursor, instance.model_dir))
