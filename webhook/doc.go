// Package webhook verifies PandaDoc's webhooks: the POSTs PandaDoc sends
// to an app's URL when a document or template changes. Anyone who learns
// that URL can send a forged "document completed"; a Verifier lets
// through only requests whose body is signed with the subscription's
// shared key.
//
//	v := &webhook.Verifier{Keys: []string{os.Getenv("PANDADOC_WEBHOOK_KEY")}}
//	http.Handle("POST /pandadoc/webhook", v.Handler(http.HandlerFunc(
//		func(w http.ResponseWriter, r *http.Request) {
//			body, _ := io.ReadAll(r.Body) // the verified bytes
//			events, err := webhook.Parse(body)
//			for _, e := range events {
//				if e.Event == webhook.EventDocumentStateChanged {
//					doc, err := e.Document()
//					// doc.ID, doc.Status ("document.completed"), …
//				}
//			}
//		})))
//
// Check and Sign work on bytes alone, for a queue consumer or a test;
// pandadoctest sends signed deliveries, with retries, to a test's server.
//
// # What PandaDoc sends
//
// These are the facts the package is built on, with their sources.
//
//   - A POST whose body is a JSON array that "may contain several
//     notification objects", each {"event": type, "data": {…}}
//     (https://developers.pandadoc.com/docs/webhooks,
//     https://developers.pandadoc.com/reference/webhook-payload).
//   - The signature is the "signature" query parameter, which PandaDoc
//     appends to the URL itself; older instructions had users add
//     "?signature={signature}" to it. Its value is the hexadecimal
//     HMAC-SHA256 of the raw body, keyed by the subscription's shared key
//     as UTF-8 bytes; PandaDoc's samples compare it in constant time
//     (https://developers.pandadoc.com/docs/webhook-verification). No time
//     is signed or sent, so there is no replay window to check.
//   - Each subscription has its own shared key, and subscriptions are per
//     workspace: "consider using workspace_id as a path parameter in your
//     URL" (https://developers.pandadoc.com/docs/webhooks). A key can be
//     regenerated (PATCH /public/v1/webhook-subscriptions/{id}/shared-key
//     in PandaDoc's OpenAPI specification); what happens to retries signed
//     with the old key is not documented, hence Verifier.Keys takes
//     several.
//   - Since 2026-07-20 an X-PandaDoc-Webhook-Event-Id header identifies a
//     delivery, "stable … across automatic and manual retries"; it is a
//     header, so the signature does not cover it
//     (https://developers.pandadoc.com/docs/webhook-deduplication,
//     https://developers.pandadoc.com/changelog/2026-07-20-webhooks-deduplicate).
//   - PandaDoc wants a 2xx within 20 seconds
//     (https://developers.pandadoc.com/docs/webhook-setup). An answer 410
//     disables the subscription at once, and answers other than 2xx for 7
//     days in a row disable it too
//     (https://hc.pandadoc.com/en/articles/9714966-webhooks). PandaDoc
//     keeps 15 days of deliveries, which can be re-sent from its webhook
//     history (same source), and GET /public/v1/webhook-events returns
//     them with their request_body and signature.
//   - Event types and payload fields come from PandaDoc's OpenAPI
//     specification (WebhookEventTriggerEnum) and its webhook reference
//     (https://developers.pandadoc.com/reference/handledocumentstatechanged,
//     https://developers.pandadoc.com/reference/handlerecipientcompleteddocument).
//     PandaDoc publishes no maximum body size.
//
// A known test vector: the key 587c22285F57883db3ee (the example shared
// key of PandaDoc's specification) and the body
// [{"event":"document_state_changed","data":{"id":"aahcZhiB6pKRbjagoZrrrr"}}]
// give the signature
// 77d7431f71c8525836002a4e9363f45a1bdab8fecb364316f40cc1fa4b202b5d, as
// PandaDoc's Python sample computes it.
//
// # Guarantees
//
//   - Signatures are compared in constant time (hmac.Equal on the decoded
//     bytes), in upper- or lowercase hexadecimal.
//   - No key, no pass: a Verifier, Check or KeyFor with no key (or only
//     empty strings, as an unset environment variable gives) refuses
//     everything, with ErrNoKey and an error log line, and Handler answers
//     500. An empty secret does not switch verification off, as it once
//     did in go-github (https://github.com/google/go-github/issues/2731).
//   - The body is read once, at most MaxBody bytes, before next runs, and
//     next reads the same bytes from r.Body. A refused request reaches no
//     handler and leaves nothing behind: no goroutine, no buffer larger
//     than MaxBody.
//   - Handler never answers 410.
//   - Parse and the typed accessors accept unknown event types and
//     fields, which PandaDoc adds over time; a field of an unexpected type
//     is skipped and named in Unparsed, not an error.
//   - With a Dedup, next runs once per delivery, and the dedup keys are
//     the event ID and the body's digest: a replay that changes or drops
//     the unsigned event ID is still a duplicate.
//   - No key appears in an error, a log line, the answer, %v or JSON.
package webhook
