-- Trains (or retrains) the model 'customers' on the raw table; one summary row.
-- Materialized as a table: training happens when the query runs, and a view only stores the
-- query (dbt's default would leave the model untrained; the error then says so).
{{ config(materialized='table') }}
select *
from train_latent_diffusion(
    '{{ ref("raw_customers") }}',
    model := 'customers',
    seed := 1,
    max_seconds := {{ var("train_seconds") }}
)
