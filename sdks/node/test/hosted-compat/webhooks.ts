// The hosted README's "Webhook Security" section, typed; node:http stands in for express.
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import {
  EZThrottle,
  WebhookVerificationError,
  tryVerifyWithSecrets,
  verifyWebhookSignature,
  verifyWebhookSignatureStrict,
  type VerificationResult,
} from "ezthrottle";

const client = new EZThrottle({ apiKey: "your_api_key" });
const WEBHOOK_SECRET = "your_secret_min_16_chars";

// Create secret (one time)
await client.createWebhookSecret("your_secret_min_16_chars");

function rawBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks)));
  });
}

// Verify webhooks (strict)
createServer(async (req: IncomingMessage, res: ServerResponse) => {
  const body = await rawBody(req);
  try {
    verifyWebhookSignatureStrict(body, req.headers["x-ezthrottle-signature"] as string, WEBHOOK_SECRET);
    const data = JSON.parse(body.toString());
    console.log(`Job ${data.job_id}: ${data.status}`);
    res.end(JSON.stringify({ ok: true }));
  } catch (error) {
    if (error instanceof WebhookVerificationError) {
      res.statusCode = 401;
      res.end(JSON.stringify({ error: error.message }));
      return;
    }
    throw error;
  }
});

// Verification Functions
export function check(payload: Buffer, signature: string, secret: string): void {
  const { verified, reason } = verifyWebhookSignature(payload, signature, secret);
  if (!verified) console.log(`Failed: ${reason}`);

  const result: VerificationResult = tryVerifyWithSecrets(payload, signature, "new_secret", "old_secret");
  console.log(result.reason); // "valid_primary" or "valid_secondary"

  // the same with the hosted optional arguments spelled out
  const strict: VerificationResult = verifyWebhookSignature(payload, signature, secret, 300);
  console.log(strict.verified);
}

// Manage Secrets
export async function manage(): Promise<void> {
  await client.createWebhookSecret("primary_secret", "secondary_secret");
  const secrets = await client.getWebhookSecret();
  console.log(secrets.primary_secret, secrets.has_secondary);
  await client.rotateWebhookSecret("new_secret");
  await client.deleteWebhookSecret();
}
