package pandadoctest

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"time"
)

// DefaultWebhookTimeout is how long a WebhookSender without a Client
// waits for an answer: the 20 seconds PandaDoc gives a webhook handler.
const DefaultWebhookTimeout = 20 * time.Second

// webhookUserAgent is the User-Agent of PandaDoc's webhook requests.
const webhookUserAgent = "PandaDoc Webhooks"

// maxWebhookAnswer bounds how much of a handler's answer a
// WebhookAttempt keeps.
const maxWebhookAnswer = 64 << 10

// ErrWebhookDisabled means a WebhookSender's subscription is disabled:
// a receiver answered 410 Gone, which makes PandaDoc disable a
// subscription at once. The sender sends nothing more.
var ErrWebhookDisabled = errors.New("pandadoctest: webhook subscription disabled: the receiver answered 410 Gone")

// SignWebhook returns the signature PandaDoc sends with body when the
// subscription's shared key is key: the lowercase hexadecimal
// HMAC-SHA256 of the raw body, keyed by the key's UTF-8 bytes. It is
// computed here, not by the webhook package, so that tests of one check
// the other.
func SignWebhook(key string, body []byte) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// A WebhookEvent is one notification of a webhook delivery: its type,
// such as "document_state_changed", and its data, any value that
// encodes to a JSON object. DocumentEvent, DocumentStateChanged and
// RecipientCompleted build realistic ones.
type WebhookEvent struct {
	Event string `json:"event"`
	Data  any    `json:"data"`
}

// WebhookBody returns the body PandaDoc POSTs for events: a JSON array
// of them. It panics if an event's Data cannot be encoded.
func WebhookBody(events ...WebhookEvent) []byte {
	if events == nil {
		events = []WebhookEvent{}
	}
	b, err := json.Marshal(events)
	if err != nil {
		panic("pandadoctest: WebhookBody: " + err.Error())
	}
	return b
}

// NewWebhookRequest returns a request as a PandaDoc delivery of body
// under key arrives at a handler: a POST to target with the signature
// appended to its query, a new X-PandaDoc-Webhook-Event-Id and PandaDoc's
// Content-Type and User-Agent. Like httptest.NewRequest, it is an
// incoming server request, for a handler's ServeHTTP with an
// httptest.ResponseRecorder, and it panics on a target it cannot parse.
// An empty key sends no signature.
func NewWebhookRequest(target, key string, body []byte) *http.Request {
	r := httptest.NewRequest(http.MethodPost, signedURL(target, key, body), bytes.NewReader(body))
	setWebhookHeaders(r.Header, newEventID())
	return r
}

// signedURL returns target with the signature of body under key
// appended to its query, or target itself when key is empty.
func signedURL(target, key string, body []byte) string {
	if key == "" {
		return target
	}
	base, fragment, _ := strings.Cut(target, "#")
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
		if strings.HasSuffix(base, "?") || strings.HasSuffix(base, "&") {
			sep = ""
		}
	}
	u := base + sep + "signature=" + SignWebhook(key, body)
	if fragment != "" {
		u += "#" + fragment
	}
	return u
}

func setWebhookHeaders(h http.Header, eventID string) {
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", webhookUserAgent)
	h.Set("X-PandaDoc-Webhook-Event-Id", eventID)
}

// newEventID returns a random (version 4) UUID, the form of PandaDoc's
// event IDs.
func newEventID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("pandadoctest: crypto/rand: " + err.Error())
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// A WebhookSender delivers webhooks as PandaDoc does, to a URL such as a
// test's httptest.Server: it POSTs the JSON array of events, signed with
// Key in the "signature" query parameter, with an
// X-PandaDoc-Webhook-Event-Id that stays the same across the retries of
// a delivery. A delivery answered other than 2xx, or not answered, is
// sent again after each wait of Retries. A 410 Gone disables the
// subscription, as at PandaDoc: no retry, and every later Send fails
// with ErrWebhookDisabled.
//
// Waits between attempts go through Wait, so that a test can run them
// in no time and see them:
//
//	var waits []time.Duration
//	s := &pandadoctest.WebhookSender{
//		Key:     key,
//		Retries: []time.Duration{time.Second, 5 * time.Second},
//		Wait: func(ctx context.Context, d time.Duration) error {
//			waits = append(waits, d)
//			return nil
//		},
//	}
//
// PandaDoc publishes no retry schedule, so the zero Retries sends each
// delivery once. A WebhookSender is safe for concurrent use by multiple
// goroutines, provided Wait is.
type WebhookSender struct {
	// Key is the subscription's shared key. Empty, deliveries carry no
	// signature (for a test that the handler refuses them).
	Key string

	// Client sends the requests. If nil, a client with the default
	// transport and a DefaultWebhookTimeout timeout is used.
	Client *http.Client

	// Retries are the waits before the second, third, … attempt of a
	// delivery; nil sends it once.
	Retries []time.Duration

	// Wait waits d before a retry, or returns an error to give up (the
	// Send then returns it). If nil, a real timer is used, and the wait
	// ends early, with ctx's error, when ctx ends.
	Wait func(ctx context.Context, d time.Duration) error

	mu       sync.Mutex // guards disabled
	disabled bool
}

// A WebhookDelivery is one delivery a WebhookSender made: what it sent,
// and how the receiver answered each attempt.
type WebhookDelivery struct {
	// EventID is the X-PandaDoc-Webhook-Event-Id of every attempt.
	EventID string
	// URL is the URL posted to, with the signature.
	URL string
	// Body is the body of every attempt.
	Body []byte
	// Attempts are the attempts, in order.
	Attempts []WebhookAttempt
}

// A WebhookAttempt is one POST of a delivery.
type WebhookAttempt struct {
	// Status is the receiver's status code, 0 when it did not answer.
	Status int
	// Body is the receiver's answer, its first 64 KiB.
	Body []byte
	// Err is why there was no answer, if there was none.
	Err error
}

// Status returns the status of the last attempt, 0 if it was not
// answered or there was no attempt.
func (d *WebhookDelivery) Status() int {
	if len(d.Attempts) == 0 {
		return 0
	}
	return d.Attempts[len(d.Attempts)-1].Status
}

// Send delivers events to target, a URL such as srv.URL+"/webhooks"; see
// WebhookSender. It returns the delivery, and an error when no attempt
// was answered 2xx.
func (s *WebhookSender) Send(ctx context.Context, target string, events ...WebhookEvent) (*WebhookDelivery, error) {
	return s.SendBody(ctx, target, WebhookBody(events...))
}

// SendBody is Send with a body of the caller's, sent as it is.
func (s *WebhookSender) SendBody(ctx context.Context, target string, body []byte) (*WebhookDelivery, error) {
	d := &WebhookDelivery{EventID: newEventID(), URL: signedURL(target, s.Key, body), Body: body}
	return d, s.deliver(ctx, d)
}

// Resend sends a past delivery again, as PandaDoc's manual retry from
// its webhook history does: the same body and event ID, to the same URL,
// with the same retries. It returns a new WebhookDelivery.
func (s *WebhookSender) Resend(ctx context.Context, d *WebhookDelivery) (*WebhookDelivery, error) {
	again := &WebhookDelivery{EventID: d.EventID, URL: d.URL, Body: d.Body}
	return again, s.deliver(ctx, again)
}

// Disabled reports whether a receiver answered 410, which disables the
// subscription.
func (s *WebhookSender) Disabled() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.disabled
}

// deliver makes d's attempts.
func (s *WebhookSender) deliver(ctx context.Context, d *WebhookDelivery) error {
	if _, err := url.Parse(d.URL); err != nil {
		return fmt.Errorf("pandadoctest: webhook URL: %w", err)
	}
	for i := 0; ; i++ {
		if s.Disabled() {
			return ErrWebhookDisabled
		}
		a := s.attempt(ctx, d)
		d.Attempts = append(d.Attempts, a)
		switch {
		case a.Status >= 200 && a.Status <= 299:
			return nil
		case a.Status == http.StatusGone:
			s.mu.Lock()
			s.disabled = true
			s.mu.Unlock()
			return ErrWebhookDisabled
		}
		if i == len(s.Retries) || ctx.Err() != nil {
			return deliveryError(d)
		}
		if err := s.wait(ctx, s.Retries[i]); err != nil {
			return fmt.Errorf("%w (waiting to retry: %w)", deliveryError(d), err)
		}
	}
}

// deliveryError describes a delivery none of whose attempts was
// answered 2xx.
func deliveryError(d *WebhookDelivery) error {
	last := d.Attempts[len(d.Attempts)-1]
	n := len(d.Attempts)
	attempts := "1 attempt"
	if n != 1 {
		attempts = fmt.Sprintf("%d attempts", n)
	}
	if last.Err != nil {
		return fmt.Errorf("pandadoctest: webhook delivery failed after %s: %w", attempts, last.Err)
	}
	return fmt.Errorf("pandadoctest: webhook delivery failed after %s: the last was answered %d %s", attempts, last.Status, http.StatusText(last.Status))
}

// attempt POSTs d once.
func (s *WebhookSender) attempt(ctx context.Context, d *WebhookDelivery) WebhookAttempt {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.URL, bytes.NewReader(d.Body))
	if err != nil {
		return WebhookAttempt{Err: err}
	}
	setWebhookHeaders(req.Header, d.EventID)
	c := s.Client
	if c == nil {
		c = &http.Client{Timeout: DefaultWebhookTimeout}
	}
	resp, err := c.Do(req)
	if err != nil {
		return WebhookAttempt{Err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxWebhookAnswer))
	// Drain a little more, so that the connection can be reused.
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxWebhookAnswer))
	return WebhookAttempt{Status: resp.StatusCode, Body: body, Err: err}
}

func (s *WebhookSender) wait(ctx context.Context, d time.Duration) error {
	if s.Wait != nil {
		return s.Wait(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// webhookTime is when the payloads of DocumentEvent say things
// happened: a fixed time, so that tests and examples are reproducible.
var webhookTime = time.Date(2026, 7, 20, 9, 30, 0, 0, time.UTC)

// DocumentEvent returns an event of type event (such as
// "document_updated") about the document id in status (such as
// "document.sent"), with the fields of PandaDoc's document payloads: name,
// dates, creator, one signer (signer@example.com), template, grand total,
// version, tags. Its Data is a map[string]any, for a test to change.
func DocumentEvent(event, id, status string) WebhookEvent {
	created := webhookTime.Add(-time.Hour)
	user := map[string]any{
		"id":            "FA5QAu8UGA3oVDQZuPL7rr",
		"email":         "sender@example.com",
		"first_name":    "Sam",
		"last_name":     "Sender",
		"avatar":        nil,
		"membership_id": "RyMNXBjBPRppw56TfYBrrr",
	}
	var sentBy any
	if status != "document.draft" && status != "document.uploaded" {
		sentBy = user
	}
	return WebhookEvent{Event: event, Data: map[string]any{
		"id":                          id,
		"name":                        "Quote for " + id,
		"status":                      status,
		"date_created":                created.Format(time.RFC3339Nano),
		"date_modified":               webhookTime.Format(time.RFC3339Nano),
		"expiration_date":             nil,
		"autonumbering_sequence_name": nil,
		"created_by":                  user,
		"sent_by":                     sentBy,
		"recipients": []any{map[string]any{
			"id":             "TM2nqhKYgPmJA9hUPDKHrr",
			"type":           "recipient",
			"first_name":     "Pat",
			"last_name":      "Signer",
			"email":          "signer@example.com",
			"phone":          "",
			"recipient_type": "SIGNER",
			"has_completed":  status == "document.completed",
			"role":           "Client",
			"roles":          []any{"Client"},
			"signing_order":  nil,
			"contact_id":     "DrNfkrquTcXH83cgF5ZGrr",
			"shared_link":    "",
		}},
		"grand_total":    map[string]any{"amount": "1500.00", "currency": "EUR"},
		"template":       map[string]any{"id": "7Xfnrk7dTaWJ78wNUrg3rr", "name": "Quote template"},
		"version":        "2",
		"tags":           []any{"created_via_api"},
		"linked_objects": []any{},
	}}
}

// DocumentStateChanged returns a document_state_changed event: the
// document id moved to status, such as "document.completed".
func DocumentStateChanged(id, status string) WebhookEvent {
	return DocumentEvent("document_state_changed", id, status)
}

// RecipientCompleted returns a recipient_completed event: the recipient
// email completed the document id, which is otherwise still sent. Its
// data has PandaDoc's action_by and action_date.
func RecipientCompleted(id, email string) WebhookEvent {
	ev := DocumentEvent("recipient_completed", id, "document.sent")
	data := ev.Data.(map[string]any)
	r := data["recipients"].([]any)[0].(map[string]any)
	r["email"], r["has_completed"] = email, true
	data["action_by"] = map[string]any{"id": "", "email": email, "first_name": r["first_name"], "last_name": r["last_name"]}
	data["action_date"] = webhookTime.Format(time.RFC3339Nano)
	return ev
}
