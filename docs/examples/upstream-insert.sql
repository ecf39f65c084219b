-- How an upstream system registers work in delivery-server's own schema (MySQL 8 /
-- MariaDB), with nothing but SQL: the README's "Insert contract". The template named by
-- the job must have been pushed first (delivery-server templates push).
--
-- Upstream sets: the job's name, template_name and from_address (optionally reply_to,
-- scheduled_at and send_by in UTC, unsubscribe); each email's job_id, to_address and
-- variables (a JSON object; optionally locale and attachments, a JSON list).
-- The database fills in: ids, status ('draft' for the job, 'pending' for emails),
-- created_at / updated_at (UTC), the counters and attempts (0).
-- Nothing is sent until the job is set to 'processing' (the last statement), so a
-- half-inserted job is never published.

START TRANSACTION;

INSERT INTO delivery_job (name, template_name, from_address, reply_to)
VALUES ('November statements', 'statement', 'statements@bank.example', 'help@bank.example');

SET @job_id = LAST_INSERT_ID();

INSERT INTO delivery_email (job_id, to_address, variables, attachments)
VALUES
  (@job_id, 'ada@customers.example',
   '{"name": "Ada", "account": "DE02 1001", "balance": "1,024.00 EUR", "period": "November"}',
   NULL),
  (@job_id, 'grace@customers.example',
   '{"name": "Grace", "account": "DE02 1002", "balance": "77.10 EUR", "period": "November"}',
   '[{"uri": "file:statements/grace.pdf", "filename": "statement.pdf", "content_type": "application/pdf"}]'),
  (@job_id, 'alan@customers.example',
   '{"name": "Alan", "account": "DE02 1003", "balance": "0.00 EUR", "period": "November"}',
   NULL);

COMMIT;

UPDATE delivery_job SET status = 'processing' WHERE id = @job_id AND status = 'draft';
