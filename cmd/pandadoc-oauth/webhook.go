package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"github.com/gopandadoc/pandadocauth/webhook"
)

// envWebhookKey is the environment variable read for the shared key of
// a webhook subscription.
const envWebhookKey = "PANDADOC_WEBHOOK_KEY"

// maxWebhookBody bounds the body file webhook-verify reads.
const maxWebhookBody = 64 << 20

const webhookVerifyUsage = `Usage: pandadoc-oauth webhook-verify [flags] BODY-FILE

pandadoc-oauth webhook-verify checks that a saved webhook body is signed with
a subscription's shared key, as a handler using the webhook package would,
for debugging a live subscription:

	pandadoc-oauth webhook-verify -signature 77d7431f…2b5d body.json
	pandadoc-oauth webhook-verify -url 'https://app.example.com/hook?signature=77d7431f…' body.json
	pandadoc-oauth webhook-verify -signature 77d7431f…2b5d - < body.json

The signature is the "signature" query parameter of the delivery, given
alone (-signature) or with the URL it came on (-url). The key comes from
-key or $` + envWebhookKey + `, and is never printed. The body must be the
bytes PandaDoc sent: the request_body of GET /public/v1/webhook-events/{id}
is a JSON string, to be decoded first. When the signature matches, the
command prints the events; when it does not, the exit status is 1.
`

// keyFlags collects repeated -key flags. It never shows its values.
type keyFlags []string

func (k *keyFlags) String() string { return "" }

func (k *keyFlags) Set(v string) error {
	*k = append(*k, v)
	return nil
}

func (c *cli) webhookVerify(_ context.Context, args []string) int {
	fs := c.newFlagSet("webhook-verify")
	var keys keyFlags
	fs.Var(&keys, "key", "the subscription's shared `key` (repeatable, for a key rotation; default $"+envWebhookKey+", which other users cannot see in the process list)")
	signature := fs.String("signature", "", "the delivery's `signature`, hexadecimal")
	rawURL := fs.String("url", "", "the delivery's `URL`, with its ?signature=")
	pos, code, ok := c.parse(fs, webhookVerifyUsage, args, true)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return c.usageError(fs, "want BODY-FILE, got %s", countArgs(len(pos)))
	}
	var sigs []string
	switch {
	case isSet(fs, "signature") && isSet(fs, "url"):
		return c.usageError(fs, "give -signature or -url, not both")
	case isSet(fs, "signature"):
		sigs = []string{strings.TrimSpace(*signature)}
	case isSet(fs, "url"):
		u, err := url.Parse(strings.TrimSpace(*rawURL))
		if err != nil {
			return c.usageError(fs, "-url: %v", err)
		}
		if sigs = u.Query()[webhook.SignatureParam]; len(sigs) == 0 {
			return c.usageError(fs, "-url has no %s parameter", webhook.SignatureParam)
		}
	default:
		return c.usageError(fs, "give the delivery's signature with -signature or -url")
	}
	if len(keys) == 0 {
		if k := c.getenv(envWebhookKey); k != "" {
			keys = keyFlags{k}
		}
	}
	if len(keys) == 0 {
		return c.usageError(fs, "no shared key: set -key or %s", envWebhookKey)
	}
	body, err := c.readWebhookBody(pos[0])
	if err != nil {
		return c.fail(fs, err)
	}

	n, err := verifyWebhook(body, sigs, keys)
	if err != nil {
		fmt.Fprintf(c.stderr, "%s: %v\n", fs.Name(), err)
		if hint := webhookHint(body, sigs, keys); hint != "" {
			fmt.Fprintf(c.stderr, "hint: %s\n", hint)
		}
		return exitFail
	}
	if len(keys) == 1 {
		fmt.Fprintln(c.stdout, "signature valid")
	} else {
		fmt.Fprintf(c.stdout, "signature valid, made with key %d of %d\n", n+1, len(keys))
	}
	c.printEvents(body)
	return exitOK
}

// verifyWebhook returns the index of the key under which one of sigs
// signs body. Its error is the most telling one: that a well-formed
// signature does not match rather than that another value is malformed,
// that a value is malformed rather than missing.
func verifyWebhook(body []byte, sigs, keys []string) (int, error) {
	err := webhook.ErrNoSignature
	for _, s := range sigs {
		e := webhook.Check(body, s, keys...)
		if e == nil {
			for i, k := range keys {
				if webhook.Check(body, s, k) == nil {
					return i, nil
				}
			}
		}
		if errors.Is(err, webhook.ErrNoSignature) || len(s) == 64 { // 64: a hexadecimal SHA-256
			err = e
		}
	}
	return -1, err
}

// webhookHint says what may have changed the body since PandaDoc signed
// it, when a likely change makes the signature match.
func webhookHint(body []byte, sigs, keys []string) string {
	if trimmed := bytes.TrimRight(body, "\r\n"); len(trimmed) < len(body) {
		if _, err := verifyWebhook(trimmed, sigs, keys); err == nil {
			return "the body without its final newline matches: the file gained a newline when it was saved"
		}
	}
	var s string
	if json.Unmarshal(body, &s) == nil {
		if _, err := verifyWebhook([]byte(s), sigs, keys); err == nil {
			return "the body decoded from its JSON string matches: save the decoded request_body, not the JSON string"
		}
		return "the body is a JSON string; PandaDoc signs the decoded bytes (the request_body of webhook-events is such a string)"
	}
	return "the body must be byte for byte what PandaDoc sent; re-indented or re-encoded JSON does not match"
}

// readWebhookBody reads the body file, or standard input for "-".
func (c *cli) readWebhookBody(name string) ([]byte, error) {
	var r io.Reader = c.stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, fmt.Errorf("reading the body: %w", err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxWebhookBody+1))
	if err != nil {
		return nil, fmt.Errorf("reading the body: %w", err)
	}
	if len(b) > maxWebhookBody {
		return nil, fmt.Errorf("the body is larger than %d MiB", maxWebhookBody>>20)
	}
	return b, nil
}

// printEvents lists a verified body's events: type, and the ID and
// status of the document, template or item when the data has them.
func (c *cli) printEvents(body []byte) {
	events, err := webhook.Parse(body)
	if err != nil {
		fmt.Fprintf(c.stdout, "the body is not PandaDoc's array of events: %v\n", err)
		return
	}
	switch len(events) {
	case 1:
		fmt.Fprintln(c.stdout, "1 event:")
	default:
		fmt.Fprintf(c.stdout, "%d events:\n", len(events))
	}
	for _, e := range events {
		line := "\t" + e.Event
		if d, err := e.Document(); err == nil {
			if d.ID != "" {
				line += " id=" + d.ID
			}
			if d.Status != "" {
				line += " status=" + d.Status
			}
		}
		fmt.Fprintln(c.stdout, line)
	}
}
