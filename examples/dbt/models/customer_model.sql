-- Trains (or retrains) the model 'customers' on the raw table; one summary row.
select *
from train_latent_diffusion(
    '{{ ref("raw_customers") }}',
    model := 'customers',
    seed := 1,
    max_seconds := {{ var("train_seconds") }}
)
