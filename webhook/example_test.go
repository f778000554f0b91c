package webhook_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/gopandadoc/pandadocauth/pandadoctest"
	"github.com/gopandadoc/pandadocauth/webhook"
)

// A webhook handler behind a Verifier, with deliveries from
// pandadoctest: one signed with the subscription's key, one forged.
func ExampleVerifier() {
	const key = "the-subscription-shared-key" // os.Getenv("PANDADOC_WEBHOOK_KEY")
	v := &webhook.Verifier{Keys: []string{key}}
	mux := http.NewServeMux()
	mux.Handle("POST /pandadoc/webhook", v.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body) // the verified bytes
		events, err := webhook.Parse(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for _, e := range events {
			if e.Event != webhook.EventDocumentStateChanged {
				continue
			}
			doc, err := e.Document()
			if err != nil {
				continue
			}
			fmt.Println("handled:", doc.ID, doc.Status)
		}
	})))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	ctx := context.Background()
	event := pandadoctest.DocumentStateChanged("aahcZhiB6pKRbjagoZrrrr", webhook.StatusCompleted)
	d, _ := (&pandadoctest.WebhookSender{Key: key}).Send(ctx, srv.URL+"/pandadoc/webhook", event)
	fmt.Println("PandaDoc's delivery:", d.Status())
	d, _ = (&pandadoctest.WebhookSender{Key: "a-guess"}).Send(ctx, srv.URL+"/pandadoc/webhook", event)
	fmt.Println("forged delivery:", d.Status())
	// Output:
	// handled: aahcZhiB6pKRbjagoZrrrr document.completed
	// PandaDoc's delivery: 200
	// forged delivery: 401
}

// One subscription per workspace, each with its own key, the workspace
// in the path as PandaDoc suggests.
func ExampleVerifier_keyFor() {
	keys := map[string][]string{ // from a database, say
		"ws-acme":   {"acme-key"},
		"ws-globex": {"globex-new-key", "globex-old-key"}, // during a key rotation
	}
	v := &webhook.Verifier{
		KeyFor: func(r *http.Request) []string { return keys[r.PathValue("workspace")] },
	}
	mux := http.NewServeMux()
	mux.Handle("POST /pandadoc/{workspace}", v.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("event for", r.PathValue("workspace"))
	})))

	body := pandadoctest.WebhookBody(pandadoctest.DocumentStateChanged("doc1", webhook.StatusSent))
	for _, d := range []struct{ workspace, key string }{
		{"ws-acme", "acme-key"},
		{"ws-globex", "globex-old-key"},
		{"ws-globex", "acme-key"}, // another workspace's key
	} {
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, pandadoctest.NewWebhookRequest("https://app.example.com/pandadoc/"+d.workspace, d.key, body))
		fmt.Println(d.workspace, "signed with", d.key+":", w.Code)
	}
	// Output:
	// event for ws-acme
	// ws-acme signed with acme-key: 200
	// event for ws-globex
	// ws-globex signed with globex-old-key: 200
	// ws-globex signed with acme-key: 401
}

// Check verifies a delivery stored elsewhere, such as one that
// GET /public/v1/webhook-events returns with its request_body and
// signature.
func ExampleCheck() {
	body := []byte(`[{"event":"document_state_changed","data":{"id":"aahcZhiB6pKRbjagoZrrrr"}}]`)
	signature := "77d7431f71c8525836002a4e9363f45a1bdab8fecb364316f40cc1fa4b202b5d"
	fmt.Println(webhook.Check(body, signature, "587c22285F57883db3ee"))
	fmt.Println(webhook.Check(body, signature, "another-key"))
	fmt.Println(webhook.Check(body, signature))
	// Output:
	// <nil>
	// webhook: bad signature: the body is not signed with the key
	// webhook: no shared key configured
}

// Deduplication: PandaDoc's retries of a delivery, and replays of its
// body, run the handler once.
func ExampleMemoryDedup() {
	runs := 0
	v := &webhook.Verifier{Keys: []string{"key"}, Dedup: &webhook.MemoryDedup{}}
	h := v.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { runs++ }))

	body := pandadoctest.WebhookBody(pandadoctest.DocumentStateChanged("doc1", webhook.StatusPaid))
	first := pandadoctest.NewWebhookRequest("https://app.example.com/hook", "key", body)
	retry := pandadoctest.NewWebhookRequest("https://app.example.com/hook", "key", body)
	retry.Header.Set(webhook.EventIDHeader, first.Header.Get(webhook.EventIDHeader))
	replay := pandadoctest.NewWebhookRequest("https://app.example.com/hook", "key", body) // another event ID
	for _, r := range []*http.Request{first, retry, replay} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		fmt.Println(w.Code)
	}
	fmt.Println("runs:", runs)
	// Output:
	// 200
	// 200
	// 200
	// runs: 1
}
