-- The SQL surface, installed as TEMP macros on each connection by duckdb_diffusion.install().
--
-- DuckDB's Python API has no table functions, so each one is a table macro over query() of a
-- planner UDF that returns SQL text. The planners take every argument as text (so a NULL, a
-- fraction or a word gets a named error, not a binder error). The SQL they return names the
-- user's table and runs here, in the caller's context: it sees the caller's TEMP tables, its
-- registered DataFrames and Arrow tables, replacement scans and the schema chosen with USE.
-- draws := 0 is runtime.DEFAULT_DRAWS (the point predictor).

-- given (a STRUCT of column := value) reaches the planner as JSON text.

CREATE OR REPLACE TEMP MACRO impute_latent_diffusion(tbl, model := NULL, seed := 0, draws := 0,
    imputations := NULL)
AS TABLE
SELECT * FROM query(ddf_plan_impute(tbl, model, seed::VARCHAR, draws::VARCHAR,
    imputations::VARCHAR));

CREATE OR REPLACE TEMP MACRO synthesize_rows(model, n, seed := 0, given := NULL)
AS TABLE
SELECT * FROM query(ddf_plan_synthesize(model, n::VARCHAR, seed::VARCHAR,
    to_json(given)::VARCHAR));

CREATE OR REPLACE TEMP MACRO train_latent_diffusion(tbl, model := NULL, seed := 0,
    max_seconds := NULL, settings := NULL, categorical := NULL, passthrough := NULL,
    epsilon := NULL, delta := NULL)
AS TABLE
SELECT * FROM query(ddf_plan_train(tbl, model, seed::VARCHAR, max_seconds::VARCHAR,
    settings::VARCHAR, to_json(categorical)::VARCHAR, to_json(passthrough)::VARCHAR,
    epsilon::VARCHAR, delta::VARCHAR));

-- "listing" only keeps DuckDB from running the planner when the macro is created (a call with
-- constant arguments only would be folded then, reading every stored model on each install).
CREATE OR REPLACE TEMP MACRO latent_diffusion_models(listing := 'all')
AS TABLE
SELECT * FROM query(ddf_plan_models(listing));
