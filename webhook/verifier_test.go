package webhook_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gopandadoc/pandadocauth/internal/testutil"
	"github.com/gopandadoc/pandadocauth/pandadoctest"
	"github.com/gopandadoc/pandadocauth/webhook"
)

const (
	testKey  = "test-shared-key-1"
	otherKey = "test-shared-key-2"
	target   = "https://app.example.com/pandadoc/webhook"
)

// recorder is a next handler that records what it was called with.
type recorder struct {
	calls  atomic.Int32
	status int // answered; 0 means 200
	body   []byte
	length int64
	again  []byte // read through GetBody after Body
}

func (h *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.calls.Add(1)
	h.body, _ = io.ReadAll(r.Body)
	h.length = r.ContentLength
	if r.GetBody != nil {
		if rc, err := r.GetBody(); err == nil {
			h.again, _ = io.ReadAll(rc)
		}
	}
	if h.status != 0 {
		w.WriteHeader(h.status)
	}
	io.WriteString(w, "next answered")
}

// chunked hides a reader's length, as a chunked request body does.
type chunked struct{ io.Reader }

// countingBody counts the bytes read from it.
type countingBody struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingBody) Close() error { return nil }

// TestHandlerStatus is the specification of what Handler answers, and
// when it calls next.
func TestHandlerStatus(t *testing.T) {
	t.Parallel()
	body := pandadoctest.WebhookBody(pandadoctest.DocumentStateChanged("doc1", "document.completed"))
	signed := func(key string) func() *http.Request {
		return func() *http.Request { return pandadoctest.NewWebhookRequest(target, key, body) }
	}
	withQuery := func(q string) func() *http.Request {
		return func() *http.Request { return pandadoctest.NewWebhookRequest(target+q, "", body) }
	}
	tests := []struct {
		name     string
		v        webhook.Verifier
		req      func() *http.Request
		next     int // status next answers, 0 for 200
		want     int
		wantNext bool
		wantText string // in the answer
	}{
		{name: "valid", v: webhook.Verifier{Keys: []string{testKey}}, req: signed(testKey), want: 200, wantNext: true, wantText: "next answered"},
		{name: "next's status reaches PandaDoc", v: webhook.Verifier{Keys: []string{testKey}}, req: signed(testKey), next: 202, want: 202, wantNext: true},
		{name: "next's failure reaches PandaDoc", v: webhook.Verifier{Keys: []string{testKey}}, req: signed(testKey), next: 503, want: 503, wantNext: true},
		{name: "wrong key", v: webhook.Verifier{Keys: []string{testKey}}, req: signed(otherKey), want: 401, wantText: "bad signature"},
		{name: "two keys, the old one signed", v: webhook.Verifier{Keys: []string{otherKey, testKey}}, req: signed(testKey), want: 200, wantNext: true},
		{name: "two keys, the new one signed", v: webhook.Verifier{Keys: []string{otherKey, testKey}}, req: signed(otherKey), want: 200, wantNext: true},
		{name: "no signature", v: webhook.Verifier{Keys: []string{testKey}}, req: signed(""), want: 401, wantText: "no signature"},
		{name: "empty signature", v: webhook.Verifier{Keys: []string{testKey}}, req: withQuery("?signature="), want: 401, wantText: "no signature"},
		{name: "malformed signature", v: webhook.Verifier{Keys: []string{testKey}}, req: withQuery("?signature=abc"), want: 401, wantText: "bad signature"},
		{name: "signature of another body", v: webhook.Verifier{Keys: []string{testKey}}, req: withQuery("?signature=" + webhook.Sign(testKey, []byte("[]"))), want: 401},
		{name: "legacy placeholder and the appended signature", v: webhook.Verifier{Keys: []string{testKey}},
			req: func() *http.Request {
				return pandadoctest.NewWebhookRequest(target+"?signature={signature}", testKey, body)
			}, want: 200, wantNext: true},
		{name: "tampered body", v: webhook.Verifier{Keys: []string{testKey}}, req: func() *http.Request {
			r := pandadoctest.NewWebhookRequest(target, testKey, body)
			b := bytes.Replace(body, []byte("document.completed"), []byte("document.completes"), 1)
			r.Body = io.NopCloser(bytes.NewReader(b))
			return r
		}, want: 401},
		{name: "no keys", v: webhook.Verifier{}, req: signed(testKey), want: 500, wantText: "no shared key configured"},
		{name: "only an empty key", v: webhook.Verifier{Keys: []string{""}}, req: signed(""), want: 500},
		{name: "KeyFor returns none", v: webhook.Verifier{Keys: []string{testKey}, KeyFor: func(*http.Request) []string { return nil }}, req: signed(testKey), want: 500},
		{name: "GET", v: webhook.Verifier{Keys: []string{testKey}}, req: func() *http.Request {
			return httptest.NewRequest(http.MethodGet, target+"?signature="+webhook.Sign(testKey, nil), nil)
		}, want: 405},
		{name: "over MaxBody, length known", v: webhook.Verifier{Keys: []string{testKey}, MaxBody: int64(len(body)) - 1}, req: signed(testKey), want: 413, wantText: "too large"},
		{name: "over MaxBody, chunked", v: webhook.Verifier{Keys: []string{testKey}, MaxBody: int64(len(body)) - 1}, req: func() *http.Request {
			r := pandadoctest.NewWebhookRequest(target, testKey, body)
			r.Body, r.ContentLength = io.NopCloser(chunked{bytes.NewReader(body)}), -1
			return r
		}, want: 413},
		{name: "exactly MaxBody", v: webhook.Verifier{Keys: []string{testKey}, MaxBody: int64(len(body))}, req: signed(testKey), want: 200, wantNext: true},
		{name: "exactly MaxBody, chunked", v: webhook.Verifier{Keys: []string{testKey}, MaxBody: int64(len(body))}, req: func() *http.Request {
			r := pandadoctest.NewWebhookRequest(target, testKey, body)
			r.Body, r.ContentLength = io.NopCloser(chunked{bytes.NewReader(body)}), -1
			return r
		}, want: 200, wantNext: true},
		{name: "body cannot be read", v: webhook.Verifier{Keys: []string{testKey}}, req: func() *http.Request {
			r := pandadoctest.NewWebhookRequest(target, testKey, body)
			r.Body, r.ContentLength = io.NopCloser(io.MultiReader(bytes.NewReader(body[:10]), errReader{})), -1
			return r
		}, want: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			next := &recorder{status: tt.next}
			log, logs := testutil.NewLogger()
			v := tt.v
			v.Logger = log
			w := httptest.NewRecorder()
			v.Handler(next).ServeHTTP(w, tt.req())
			if w.Code != tt.want {
				t.Errorf("status %d, want %d; answer %q", w.Code, tt.want, w.Body)
			}
			if w.Code == http.StatusGone {
				t.Error("answered 410, which disables the subscription")
			}
			if n := next.calls.Load(); n != map[bool]int32{false: 0, true: 1}[tt.wantNext] {
				t.Errorf("next called %d times", n)
			}
			if tt.wantNext && !bytes.Equal(next.body, body) {
				t.Errorf("next read %q, want the body sent", next.body)
			}
			if !strings.Contains(w.Body.String(), tt.wantText) {
				t.Errorf("answer %q lacks %q", w.Body, tt.wantText)
			}
			if tt.want == 405 && w.Header().Get("Allow") != "POST" {
				t.Errorf("405 with Allow %q, want POST", w.Header().Get("Allow"))
			}
			// Every refusal is logged, and nothing else is.
			refused := !tt.wantNext
			if got := strings.Contains(logs.String(), "request refused"); got != refused {
				t.Errorf("logged a refusal: %v, want %v; log:\n%s", got, refused, logs)
			}
			testutil.AssertNoSecret(t, "the answer and the log", w.Body.String()+logs.String(), testKey, otherKey)
		})
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset by peer") }

// TestHandlerNoKeyIsLoud checks that a Verifier without keys refuses
// every request, signed or not, and logs an error each time.
func TestHandlerNoKeyIsLoud(t *testing.T) {
	t.Parallel()
	log, logs := testutil.NewLogger()
	next := &recorder{}
	h := (&webhook.Verifier{Keys: []string{""}, Logger: log}).Handler(next)
	for _, key := range []string{"", testKey} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, pandadoctest.NewWebhookRequest(target, key, []byte("[]")))
		if w.Code != 500 {
			t.Errorf("status %d, want 500", w.Code)
		}
	}
	if n := next.calls.Load(); n != 0 {
		t.Errorf("next called %d times without a key", n)
	}
	if n := strings.Count(logs.String(), "level=ERROR msg=\"webhook: request refused: no shared key is configured"); n != 2 {
		t.Errorf("%d error lines for 2 refusals; log:\n%s", n, logs)
	}
	// Verify and Check say the same.
	if _, err := (&webhook.Verifier{}).Verify(pandadoctest.NewWebhookRequest(target, testKey, []byte("[]"))); !errors.Is(err, webhook.ErrNoKey) {
		t.Errorf("Verify without keys = %v, want ErrNoKey", err)
	}
}

// TestHandlerBodyForNext checks that next reads the verified bytes from
// r.Body, and again from GetBody, with ContentLength set, for a body
// with and without a known length.
func TestHandlerBodyForNext(t *testing.T) {
	t.Parallel()
	body := pandadoctest.WebhookBody(
		pandadoctest.RecipientCompleted("doc1", "a@example.com"),
		pandadoctest.DocumentStateChanged("doc1", "document.completed"))
	for _, length := range []string{"known", "chunked"} {
		t.Run(length, func(t *testing.T) {
			t.Parallel()
			r := pandadoctest.NewWebhookRequest(target, testKey, body)
			if length == "chunked" {
				r.Body, r.ContentLength = io.NopCloser(chunked{bytes.NewReader(body)}), -1
			}
			next := &recorder{}
			w := httptest.NewRecorder()
			(&webhook.Verifier{Keys: []string{testKey}}).Handler(next).ServeHTTP(w, r)
			if w.Code != 200 {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			if sha256.Sum256(next.body) != sha256.Sum256(body) || next.length != int64(len(body)) {
				t.Errorf("next read %d bytes (ContentLength %d), want the %d sent", len(next.body), next.length, len(body))
			}
			if !bytes.Equal(next.again, body) {
				t.Errorf("GetBody gave %q", next.again)
			}
		})
	}
}

// TestVerify checks Verify's results, and that it leaves the body
// readable.
func TestVerify(t *testing.T) {
	t.Parallel()
	body := []byte(vectorBody)
	v := &webhook.Verifier{Keys: []string{vectorKey}}
	r := httptest.NewRequest("POST", target+"?signature="+vectorSig, bytes.NewReader(body))
	got, err := v.Verify(r)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("Verify = %q, %v", got, err)
	}
	again, _ := io.ReadAll(r.Body)
	if !bytes.Equal(again, body) || r.ContentLength != int64(len(body)) {
		t.Errorf("after Verify, r.Body holds %q, ContentLength %d", again, r.ContentLength)
	}

	tests := []struct {
		name string
		url  string
		body io.Reader
		want error
	}{
		{"no signature", target, bytes.NewReader(body), webhook.ErrNoSignature},
		{"wrong signature", target + "?signature=" + webhook.Sign("x", body), bytes.NewReader(body), webhook.ErrBadSignature},
		{"too large", target + "?signature=" + vectorSig, chunked{io.MultiReader(bytes.NewReader(body), strings.NewReader(strings.Repeat(" ", webhook.DefaultMaxBody)))}, webhook.ErrTooLarge},
	}
	for _, tt := range tests {
		got, err := v.Verify(httptest.NewRequest("POST", tt.url, tt.body))
		if !errors.Is(err, tt.want) || got != nil {
			t.Errorf("%s: Verify = %q, %v; want nil, %v", tt.name, got, err, tt.want)
		}
	}
}

// TestHandlerOversizedReadsBounded checks that a body over MaxBody is
// refused after reading at most MaxBody+1 bytes of it, whatever its
// size, and that the default limit holds without MaxBody.
func TestHandlerOversizedReadsBounded(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		maxBody int64
		size    int64
		limit   int64
	}{
		{"1 KiB limit, 64 MiB body", 1 << 10, 64 << 20, 1 << 10},
		{"default limit, one byte over", 0, webhook.DefaultMaxBody + 1, webhook.DefaultMaxBody},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src := &countingBody{r: io.LimitReader(zeros{}, tt.size)}
			r := httptest.NewRequest("POST", target+"?signature="+strings.Repeat("0", 64), nil)
			r.Body, r.ContentLength = src, -1
			next := &recorder{}
			w := httptest.NewRecorder()
			(&webhook.Verifier{Keys: []string{testKey}, MaxBody: tt.maxBody}).Handler(next).ServeHTTP(w, r)
			if w.Code != 413 || next.calls.Load() != 0 {
				t.Errorf("status %d, next called %d times; want 413 and 0", w.Code, next.calls.Load())
			}
			if n := src.n.Load(); n > tt.limit+1 {
				t.Errorf("read %d bytes, more than the limit %d + 1", n, tt.limit)
			}
		})
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestKeyForPerWorkspace serves one subscription per workspace, its
// key chosen from the path.
func TestKeyForPerWorkspace(t *testing.T) {
	t.Parallel()
	keys := map[string][]string{"ws-a": {"key-a"}, "ws-b": {"key-b-new", "key-b-old"}}
	log, logs := testutil.NewLogger()
	v := &webhook.Verifier{
		Keys:   []string{"not-for-workspaces"}, // overridden by KeyFor
		KeyFor: func(r *http.Request) []string { return keys[r.PathValue("workspace")] },
		Logger: log,
	}
	var got atomic.Value
	mux := http.NewServeMux()
	mux.Handle("/webhooks/{workspace}", v.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(r.PathValue("workspace"))
	})))
	body := pandadoctest.WebhookBody(pandadoctest.DocumentStateChanged("doc1", "document.sent"))
	tests := []struct {
		workspace, key string
		want           int
	}{
		{"ws-a", "key-a", 200},
		{"ws-a", "key-b-new", 401}, // another workspace's key
		{"ws-b", "key-a", 401},
		{"ws-b", "key-b-new", 200},
		{"ws-b", "key-b-old", 200},
		{"ws-a", "not-for-workspaces", 401},
		{"ws-unknown", "key-a", 500}, // no key configured for it
	}
	for _, tt := range tests {
		got.Store("")
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, pandadoctest.NewWebhookRequest("https://app.example.com/webhooks/"+tt.workspace, tt.key, body))
		if w.Code != tt.want {
			t.Errorf("%s signed with %s: status %d, want %d", tt.workspace, tt.key, w.Code, tt.want)
		}
		if ran := got.Load().(string); (tt.want == 200) != (ran == tt.workspace) {
			t.Errorf("%s signed with %s: next ran for %q", tt.workspace, tt.key, ran)
		}
	}
	if !strings.Contains(logs.String(), "path=/webhooks/ws-unknown") {
		t.Errorf("the refusal for an unknown workspace is not logged with its path:\n%s", logs)
	}
	testutil.AssertNoSecret(t, "the log", logs.String(), "key-a", "key-b-new", "key-b-old")
}

// TestHandlerEndToEnd delivers through a real server with
// pandadoctest's sender: valid, unsigned, wrong key, and oversized.
func TestHandlerEndToEnd(t *testing.T) {
	t.Parallel()
	next := &recorder{}
	v := &webhook.Verifier{Keys: []string{testKey}, MaxBody: 64 << 10}
	srv := httptest.NewServer(v.Handler(next))
	t.Cleanup(srv.Close)
	ctx := testutil.Context(t)

	d, err := (&pandadoctest.WebhookSender{Key: testKey}).Send(ctx, srv.URL, pandadoctest.DocumentStateChanged("doc1", "document.completed"))
	if err != nil || d.Status() != 200 || next.calls.Load() != 1 || !bytes.Equal(next.body, d.Body) {
		t.Fatalf("valid delivery: %v, status %d, next called %d times", err, d.Status(), next.calls.Load())
	}
	for _, key := range []string{"", otherKey} {
		d, err := (&pandadoctest.WebhookSender{Key: key}).Send(ctx, srv.URL, pandadoctest.DocumentStateChanged("doc1", "document.completed"))
		if err == nil || d.Status() != 401 {
			t.Errorf("key %q: %v, status %d; want 401", key, err, d.Status())
		}
	}
	big := append([]byte(`[{"event":"document_updated","data":{"pad":"`), bytes.Repeat([]byte("x"), 1<<20)...)
	big = append(big, `"}}]`...)
	d, err = (&pandadoctest.WebhookSender{Key: testKey}).SendBody(ctx, srv.URL, big)
	if d.Status() != 413 {
		t.Errorf("1 MiB body over a 64 KiB limit: %v, status %d; want 413", err, d.Status())
	}
	if n := next.calls.Load(); n != 1 {
		t.Errorf("next called %d times in all, want 1", n)
	}
}

// TestVerifierRedacted checks that no way of printing or encoding a
// Verifier shows its keys.
func TestVerifierRedacted(t *testing.T) {
	t.Parallel()
	log, logs := testutil.NewLogger()
	v := webhook.Verifier{Keys: []string{testKey, otherKey, ""}, KeyFor: func(*http.Request) []string { return nil }, Logger: log}
	js, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	jsp, _ := json.Marshal(&v)
	log.Info("verifier", "v", v, "p", &v)
	var out strings.Builder
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%100v"} {
		fmt.Fprintf(&out, verb+"\n", v)
		fmt.Fprintf(&out, verb+"\n", &v)
	}
	fmt.Fprintln(&out, []webhook.Verifier{v}, map[string]*webhook.Verifier{"v": &v}, struct{ V webhook.Verifier }{v})
	all := out.String() + string(js) + string(jsp) + logs.String()
	testutil.AssertNoSecret(t, "printing a Verifier", all, testKey, otherKey)
	testutil.AssertNoSecret(t, "printing a Verifier (hex)", all, fmt.Sprintf("%x", testKey), fmt.Sprintf("%X", testKey))
	if !strings.Contains(v.String(), `Keys: ["[redacted]" "[redacted]" ""]`) {
		t.Errorf("String = %s, want the keys counted and redacted", v.String())
	}
}

// TestVerifierConcurrent runs one Verifier from many goroutines, for
// the race detector.
func TestVerifierConcurrent(t *testing.T) {
	t.Parallel()
	next := &countingHandler{}
	h := (&webhook.Verifier{Keys: []string{testKey}, Dedup: &webhook.MemoryDedup{}}).Handler(next)
	const n = 32
	done := make(chan int, n)
	for i := range n {
		go func() {
			body := pandadoctest.WebhookBody(pandadoctest.DocumentStateChanged(fmt.Sprint("doc", i%8), "document.sent"))
			w := httptest.NewRecorder()
			h.ServeHTTP(w, pandadoctest.NewWebhookRequest(target, testKey, body).WithContext(context.Background()))
			done <- w.Code
		}()
	}
	codes := map[int]int{}
	for range n {
		codes[testutil.Recv(t, done, "a delivery")]++
	}
	// 8 distinct bodies: each runs next once; the copies are answered
	// 200 (already done) or 409 (running right now).
	if got := next.n.Load(); got != 8 {
		t.Errorf("next ran %d times for 8 distinct bodies", got)
	}
	if codes[200]+codes[409] != n {
		t.Errorf("answers %v", codes)
	}
}

type countingHandler struct{ n atomic.Int32 }

func (h *countingHandler) ServeHTTP(http.ResponseWriter, *http.Request) { h.n.Add(1) }

var _ slog.LogValuer = webhook.Verifier{}
