-- Webhooks from regions (issue 15): a webhook's `regions`, so the node that delivers it can
-- hand the POST to a live node of one of them. NULL: deliver from anywhere.
ALTER TABLE webhook_deliveries ADD COLUMN regions jsonb;
