package webhook_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gopandadoc/pandadocauth/webhook"
)

// benchBody returns a signed body of n bytes.
func benchBody(n int) ([]byte, string) {
	body := append([]byte(`[{"event":"document_updated","data":{"pad":"`), bytes.Repeat([]byte("x"), n)...)
	body = append(body, `"}}]`...)
	return body, webhook.Sign(testKey, body)
}

// BenchmarkCheck measures Check on a 1 MiB body: one HMAC-SHA256 pass.
func BenchmarkCheck(b *testing.B) {
	body, sig := benchBody(1 << 20)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for range b.N {
		if err := webhook.Check(body, sig, testKey); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHandler measures a verified 1 MiB delivery through Handler,
// reading the body from the request as a server would.
func BenchmarkHandler(b *testing.B) {
	body, sig := benchBody(1 << 20)
	h := (&webhook.Verifier{Keys: []string{testKey}}).Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for range b.N {
		r := httptest.NewRequest(http.MethodPost, target+"?signature="+sig, bytes.NewReader(body))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 200 {
			b.Fatal(w.Code)
		}
	}
}
