package pandadoctest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopandadoc/pandadocauth/internal/testutil"
	"github.com/gopandadoc/pandadocauth/pandadoctest"
)

const webhookKey = "pandadoctest-webhook-key"

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestSignWebhookKnownAnswer(t *testing.T) {
	t.Parallel()
	// PandaDoc's example shared key, and the signature its Python
	// sample computes.
	got := pandadoctest.SignWebhook("587c22285F57883db3ee", []byte(`[{"event":"document_state_changed","data":{"id":"aahcZhiB6pKRbjagoZrrrr"}}]`))
	if want := "77d7431f71c8525836002a4e9363f45a1bdab8fecb364316f40cc1fa4b202b5d"; got != want {
		t.Errorf("SignWebhook = %s, want %s", got, want)
	}
}

func TestNewWebhookRequest(t *testing.T) {
	t.Parallel()
	body := pandadoctest.WebhookBody(pandadoctest.DocumentStateChanged("doc1", "document.sent"))
	sig := pandadoctest.SignWebhook(webhookKey, body)
	tests := []struct {
		target, key string
		wantQuery   string
	}{
		{"https://app.example.com/hook", webhookKey, "signature=" + sig},
		{"https://app.example.com/hook?workspace=ws1", webhookKey, "workspace=ws1&signature=" + sig},
		{"https://app.example.com/hook?", webhookKey, "signature=" + sig},
		{"https://app.example.com/hook?signature={signature}", webhookKey, "signature={signature}&signature=" + sig},
		{"https://app.example.com/hook?a=1", "", "a=1"},
	}
	for _, tt := range tests {
		r := pandadoctest.NewWebhookRequest(tt.target, tt.key, body)
		if r.Method != http.MethodPost || r.URL.RawQuery != tt.wantQuery {
			t.Errorf("%s: %s ?%s, want POST ?%s", tt.target, r.Method, r.URL.RawQuery, tt.wantQuery)
		}
		if got, _ := io.ReadAll(r.Body); !bytes.Equal(got, body) || r.ContentLength != int64(len(body)) {
			t.Errorf("%s: body %q (length %d)", tt.target, got, r.ContentLength)
		}
		if id := r.Header.Get("X-PandaDoc-Webhook-Event-Id"); !uuidV4.MatchString(id) {
			t.Errorf("event ID %q is not a UUID", id)
		}
		if r.Header.Get("Content-Type") != "application/json" || r.Header.Get("User-Agent") != "PandaDoc Webhooks" {
			t.Errorf("headers %v", r.Header)
		}
		if r.RequestURI == "" {
			t.Error("not a server request: RequestURI is empty")
		}
	}
	a := pandadoctest.NewWebhookRequest("https://app.example.com/hook", webhookKey, body)
	b := pandadoctest.NewWebhookRequest("https://app.example.com/hook", webhookKey, body)
	if a.Header.Get("X-PandaDoc-Webhook-Event-Id") == b.Header.Get("X-PandaDoc-Webhook-Event-Id") {
		t.Error("two requests share an event ID")
	}
}

// webhookReceiver is a test server that records the webhook requests it
// receives and answers them with statuses, in turn (then 200).
type webhookReceiver struct {
	*httptest.Server
	mu       sync.Mutex // guards the fields below
	statuses []int
	got      []receivedWebhook
}

type receivedWebhook struct {
	query   string
	eventID string
	agent   string
	body    []byte
}

func newWebhookReceiver(t *testing.T, statuses ...int) *webhookReceiver {
	t.Helper()
	rcv := &webhookReceiver{statuses: statuses}
	rcv.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rcv.mu.Lock()
		rcv.got = append(rcv.got, receivedWebhook{r.URL.RawQuery, r.Header.Get("X-PandaDoc-Webhook-Event-Id"), r.UserAgent(), body})
		status := 200
		if len(rcv.statuses) > 0 {
			status, rcv.statuses = rcv.statuses[0], rcv.statuses[1:]
		}
		rcv.mu.Unlock()
		w.WriteHeader(status)
		io.WriteString(w, "answer")
	}))
	t.Cleanup(rcv.Close)
	return rcv
}

func (rcv *webhookReceiver) received() []receivedWebhook {
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	return slices.Clone(rcv.got)
}

// recordWaits returns a Wait that records its waits instead of waiting.
func recordWaits() (func(context.Context, time.Duration) error, func() []time.Duration) {
	var mu sync.Mutex
	var waits []time.Duration
	return func(_ context.Context, d time.Duration) error {
			mu.Lock()
			defer mu.Unlock()
			waits = append(waits, d)
			return nil
		}, func() []time.Duration {
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(waits)
		}
}

func TestWebhookSenderDelivers(t *testing.T) {
	t.Parallel()
	rcv := newWebhookReceiver(t)
	s := &pandadoctest.WebhookSender{Key: webhookKey}
	d, err := s.Send(testutil.Context(t), rcv.URL+"/hook?ws=1", pandadoctest.DocumentStateChanged("doc1", "document.completed"))
	if err != nil || d.Status() != 200 || len(d.Attempts) != 1 || string(d.Attempts[0].Body) != "answer" {
		t.Fatalf("Send = %+v, %v", d, err)
	}
	got := rcv.received()
	if len(got) != 1 {
		t.Fatalf("%d requests, want 1", len(got))
	}
	r := got[0]
	if r.query != "ws=1&signature="+pandadoctest.SignWebhook(webhookKey, r.body) || !bytes.Equal(r.body, d.Body) {
		t.Errorf("query %q for body %s", r.query, r.body)
	}
	if r.eventID != d.EventID || !uuidV4.MatchString(r.eventID) || r.agent != "PandaDoc Webhooks" {
		t.Errorf("event ID %q (delivery says %q), User-Agent %q", r.eventID, d.EventID, r.agent)
	}
	var events []struct {
		Event string         `json:"event"`
		Data  map[string]any `json:"data"`
	}
	if err := json.Unmarshal(r.body, &events); err != nil || len(events) != 1 || events[0].Event != "document_state_changed" ||
		events[0].Data["id"] != "doc1" || events[0].Data["status"] != "document.completed" {
		t.Errorf("body %s: %v", r.body, err)
	}
}

// TestWebhookSenderRetries checks that a delivery answered with
// failures is sent again after each wait, with the same event ID, body
// and signature, until it is answered 2xx.
func TestWebhookSenderRetries(t *testing.T) {
	t.Parallel()
	rcv := newWebhookReceiver(t, 503, 500, 204)
	wait, waits := recordWaits()
	s := &pandadoctest.WebhookSender{Key: webhookKey, Retries: []time.Duration{time.Second, 5 * time.Second, time.Minute}, Wait: wait}
	d, err := s.Send(testutil.Context(t), rcv.URL, pandadoctest.RecipientCompleted("doc1", "a@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	var statuses []int
	for _, a := range d.Attempts {
		statuses = append(statuses, a.Status)
	}
	if !slices.Equal(statuses, []int{503, 500, 204}) {
		t.Errorf("attempts answered %v", statuses)
	}
	if w := waits(); !slices.Equal(w, []time.Duration{time.Second, 5 * time.Second}) {
		t.Errorf("waits %v, want [1s 5s]", w)
	}
	got := rcv.received()
	if len(got) != 3 {
		t.Fatalf("%d requests, want 3", len(got))
	}
	for _, r := range got[1:] {
		if r.eventID != got[0].eventID || r.query != got[0].query || !bytes.Equal(r.body, got[0].body) {
			t.Errorf("a retry differs from the first attempt: %+v vs %+v", r, got[0])
		}
	}

	// Resend is a manual retry: the same event ID and body again.
	again, err := s.Resend(testutil.Context(t), d)
	if err != nil || again.EventID != d.EventID || !bytes.Equal(again.Body, d.Body) || len(again.Attempts) != 1 {
		t.Errorf("Resend = %+v, %v", again, err)
	}
	if got := rcv.received(); len(got) != 4 || got[3].eventID != d.EventID {
		t.Errorf("after Resend, %d requests", len(got))
	}
}

func TestWebhookSenderGivesUp(t *testing.T) {
	t.Parallel()
	t.Run("failures", func(t *testing.T) {
		t.Parallel()
		rcv := newWebhookReceiver(t, 500, 500, 500, 500)
		wait, waits := recordWaits()
		s := &pandadoctest.WebhookSender{Key: webhookKey, Retries: []time.Duration{time.Second, time.Second}, Wait: wait}
		d, err := s.Send(testutil.Context(t), rcv.URL, pandadoctest.DocumentStateChanged("d", "document.sent"))
		if err == nil || !strings.Contains(err.Error(), "after 3 attempts") || !strings.Contains(err.Error(), "500") {
			t.Errorf("Send = %v, want a failure after 3 attempts", err)
		}
		if len(d.Attempts) != 3 || len(rcv.received()) != 3 || len(waits()) != 2 {
			t.Errorf("%d attempts, %d requests, %d waits; want 3, 3, 2", len(d.Attempts), len(rcv.received()), len(waits()))
		}
	})
	t.Run("no answer", func(t *testing.T) {
		t.Parallel()
		rcv := newWebhookReceiver(t)
		url := rcv.URL
		rcv.Close() // connections are refused from now on
		wait, waits := recordWaits()
		s := &pandadoctest.WebhookSender{Key: webhookKey, Retries: []time.Duration{time.Second}, Wait: wait}
		d, err := s.Send(testutil.Context(t), url, pandadoctest.DocumentStateChanged("d", "document.sent"))
		if err == nil || len(d.Attempts) != 2 || d.Attempts[1].Err == nil || d.Status() != 0 || len(waits()) != 1 {
			t.Errorf("Send = %+v, %v; want 2 unanswered attempts", d, err)
		}
		if !errors.Is(err, d.Attempts[1].Err) {
			t.Errorf("error %v does not wrap the last attempt's %v", err, d.Attempts[1].Err)
		}
	})
	t.Run("Wait fails", func(t *testing.T) {
		t.Parallel()
		rcv := newWebhookReceiver(t, 500, 500)
		stop := errors.New("test over")
		s := &pandadoctest.WebhookSender{Key: webhookKey, Retries: []time.Duration{time.Hour},
			Wait: func(context.Context, time.Duration) error { return stop }}
		d, err := s.Send(testutil.Context(t), rcv.URL, pandadoctest.DocumentStateChanged("d", "document.sent"))
		if !errors.Is(err, stop) || len(d.Attempts) != 1 {
			t.Errorf("Send = %v with %d attempts, want Wait's error after 1", err, len(d.Attempts))
		}
	})
	t.Run("context ended", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(context.Background())
		rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			cancel()
			w.WriteHeader(500)
		}))
		t.Cleanup(rcv.Close)
		waited := false
		s := &pandadoctest.WebhookSender{Key: webhookKey, Retries: []time.Duration{time.Hour},
			Wait: func(context.Context, time.Duration) error { waited = true; return nil }}
		d, err := s.Send(ctx, rcv.URL, pandadoctest.DocumentStateChanged("d", "document.sent"))
		if err == nil || waited || len(d.Attempts) != 1 {
			t.Errorf("Send = %v, waited %v, %d attempts; want a failure without a retry", err, waited, len(d.Attempts))
		}
	})
}

// TestWebhookSenderRealTimer runs the default wait with a zero wait, so
// that the timer path runs without sleeping.
func TestWebhookSenderRealTimer(t *testing.T) {
	t.Parallel()
	rcv := newWebhookReceiver(t, 502)
	s := &pandadoctest.WebhookSender{Key: webhookKey, Retries: []time.Duration{0}}
	d, err := s.Send(testutil.Context(t), rcv.URL, pandadoctest.DocumentStateChanged("d", "document.sent"))
	if err != nil || len(d.Attempts) != 2 || d.Status() != 200 {
		t.Errorf("Send = %+v, %v", d, err)
	}
}

// TestWebhookSender410 checks that a 410 disables the subscription, as
// at PandaDoc: no retry, and nothing sent afterwards.
func TestWebhookSender410(t *testing.T) {
	t.Parallel()
	rcv := newWebhookReceiver(t, 410)
	wait, waits := recordWaits()
	s := &pandadoctest.WebhookSender{Key: webhookKey, Retries: []time.Duration{time.Second}, Wait: wait}
	ctx := testutil.Context(t)
	d, err := s.Send(ctx, rcv.URL, pandadoctest.DocumentStateChanged("d", "document.sent"))
	if !errors.Is(err, pandadoctest.ErrWebhookDisabled) || d.Status() != 410 || len(waits()) != 0 || !s.Disabled() {
		t.Fatalf("Send = %v (status %d, %d waits, disabled %v); want ErrWebhookDisabled at once", err, d.Status(), len(waits()), s.Disabled())
	}
	d, err = s.Send(ctx, rcv.URL, pandadoctest.DocumentStateChanged("d", "document.sent"))
	if !errors.Is(err, pandadoctest.ErrWebhookDisabled) || len(d.Attempts) != 0 || len(rcv.received()) != 1 {
		t.Errorf("Send after 410 = %v, %d attempts, %d requests in all; want nothing sent", err, len(d.Attempts), len(rcv.received()))
	}
}

func TestWebhookSenderUnsigned(t *testing.T) {
	t.Parallel()
	rcv := newWebhookReceiver(t)
	if _, err := (&pandadoctest.WebhookSender{}).Send(testutil.Context(t), rcv.URL, pandadoctest.DocumentStateChanged("d", "document.sent")); err != nil {
		t.Fatal(err)
	}
	if got := rcv.received(); len(got) != 1 || got[0].query != "" {
		t.Errorf("an unsigned delivery has query %q", got[0].query)
	}
}

func TestWebhookSenderConcurrent(t *testing.T) {
	t.Parallel()
	rcv := newWebhookReceiver(t)
	s := &pandadoctest.WebhookSender{Key: webhookKey}
	ctx := testutil.Context(t)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Send(ctx, rcv.URL, pandadoctest.DocumentStateChanged("d", "document.sent")); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	ids := map[string]bool{}
	for _, r := range rcv.received() {
		ids[r.eventID] = true
	}
	if len(ids) != 8 {
		t.Errorf("%d event IDs for 8 deliveries", len(ids))
	}
}

// TestWebhookPayloads checks the fields of the payloads against
// PandaDoc's document payload.
func TestWebhookPayloads(t *testing.T) {
	t.Parallel()
	var events []struct {
		Event string         `json:"event"`
		Data  map[string]any `json:"data"`
	}
	body := pandadoctest.WebhookBody(
		pandadoctest.DocumentStateChanged("doc1", "document.completed"),
		pandadoctest.RecipientCompleted("doc2", "pat@example.com"),
		pandadoctest.DocumentEvent("document_updated", "doc3", "document.draft"))
	if err := json.Unmarshal(body, &events); err != nil || len(events) != 3 {
		t.Fatalf("%s: %v", body, err)
	}
	for _, e := range events {
		for _, f := range []string{"id", "name", "status", "date_created", "date_modified", "expiration_date", "created_by", "sent_by",
			"recipients", "grand_total", "template", "version", "tags", "linked_objects", "autonumbering_sequence_name"} {
			if _, ok := e.Data[f]; !ok {
				t.Errorf("%s lacks %s", e.Event, f)
			}
		}
	}
	if events[0].Event != "document_state_changed" || events[0].Data["status"] != "document.completed" {
		t.Errorf("first event %+v", events[0])
	}
	rc := events[1].Data
	actionBy, _ := rc["action_by"].(map[string]any)
	recipient := rc["recipients"].([]any)[0].(map[string]any)
	if events[1].Event != "recipient_completed" || actionBy["email"] != "pat@example.com" || rc["action_date"] == nil ||
		recipient["email"] != "pat@example.com" || recipient["has_completed"] != true {
		t.Errorf("recipient_completed %+v", rc)
	}
	if events[2].Data["sent_by"] != nil {
		t.Errorf("a draft has a sender: %v", events[2].Data["sent_by"])
	}
	// Each call builds its own data, for a test to change.
	a := pandadoctest.DocumentStateChanged("x", "document.sent")
	a.Data.(map[string]any)["name"] = "changed"
	if b := pandadoctest.DocumentStateChanged("x", "document.sent"); b.Data.(map[string]any)["name"] == "changed" {
		t.Error("payloads share their data")
	}
	if got := string(pandadoctest.WebhookBody()); got != "[]" {
		t.Errorf("WebhookBody() = %s, want []", got)
	}
}
