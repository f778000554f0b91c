package pandadoctest_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/gopandadoc/pandadocauth/pandadoctest"
)

// A test delivers a signed webhook to the handler under test, which
// fails once; the sender retries with the same event ID, and the test
// does not wait for real.
func ExampleWebhookSender() {
	failures := 1
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ok := r.URL.Query().Get("signature") == pandadoctest.SignWebhook("shared-key", body)
		fmt.Println("received, signature valid:", ok)
		if failures > 0 {
			failures--
			http.Error(w, "try again", http.StatusServiceUnavailable)
		}
	})
	srv := httptest.NewServer(handler)
	defer srv.Close()

	s := &pandadoctest.WebhookSender{
		Key:     "shared-key",
		Retries: []time.Duration{time.Minute},
		Wait: func(ctx context.Context, d time.Duration) error {
			fmt.Println("retry in", d)
			return nil
		},
	}
	d, err := s.Send(context.Background(), srv.URL+"/webhook", pandadoctest.DocumentStateChanged("doc1", "document.completed"))
	fmt.Println(err, len(d.Attempts), "attempts, last answered", d.Status())
	// Output:
	// received, signature valid: true
	// retry in 1m0s
	// received, signature valid: true
	// <nil> 2 attempts, last answered 200
}
