-- Downstream: an aggregate that no longer silently drops the customers with gaps.
select segment, count(*) as customers, round(avg(income), 2) as avg_income
from {{ ref("customers_imputed") }}
group by segment
order by segment
