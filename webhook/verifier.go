package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
)

// SignatureParam is the query parameter that carries PandaDoc's
// signature of the body.
const SignatureParam = "signature"

// DefaultMaxBody is the body limit of a Verifier whose MaxBody is zero:
// 4 MiB. PandaDoc publishes no maximum; the example deliveries of its
// documentation are about a kilobyte, and a subscription may add a
// document's fields, tokens, products and pricing.
const DefaultMaxBody = 4 << 20

// A Verifier checks that requests come from PandaDoc: the "signature"
// query parameter must be the hexadecimal HMAC-SHA256 of the raw body
// under one of the subscription's shared keys. It reads the body once,
// at most MaxBody bytes, and hands it on.
//
// With no key it refuses every request: it never fails open. The zero
// value refuses everything; set Keys or KeyFor. Its methods are safe for
// concurrent use by multiple goroutines, provided KeyFor is.
type Verifier struct {
	// Keys are the shared keys of the subscription. A signature made
	// with any of them is accepted: list two while a key is being
	// regenerated, as deliveries signed with the old one may still
	// arrive for a while. Empty strings are ignored.
	Keys []string

	// KeyFor, if set, returns the keys for a request, overriding Keys:
	// for an app with one subscription per workspace, which PandaDoc
	// suggests telling apart by a workspace in the URL path
	// (r.PathValue("workspace") with a ServeMux pattern). No key for a
	// request refuses it, as an empty Keys does.
	KeyFor func(r *http.Request) []string

	// MaxBody bounds the body in bytes; zero or less means
	// DefaultMaxBody. A larger body is refused with ErrTooLarge, and
	// Handler answers 413.
	MaxBody int64

	// Logger, if set, receives a line for every refused request (a
	// warning, and an error when no key is configured), with the reason,
	// the path and the remote address; never a key, a signature or the
	// body.
	Logger *slog.Logger

	// Dedup, if set, makes Handler call next once per delivery, however
	// often PandaDoc retries it or anyone replays it, for as long as the
	// Dedup remembers it. See Dedup.
	Dedup Dedup
}

// Verify reads r's body (at most MaxBody bytes), checks its signature
// and returns it. It replaces r.Body (with GetBody and ContentLength) by
// the bytes it read, so that the body can be read again. It returns
// ErrNoKey, ErrNoSignature, ErrTooLarge or an error wrapping
// ErrBadSignature, or the error of reading the body; with an error, the
// body must not be used.
//
// The query is checked before the body is read, so a request without a
// key or a signature costs no read. Verify is for handlers that route
// themselves, for queue consumers, and for deliveries fetched again from
// PandaDoc's GET /public/v1/webhook-events (build a request with the
// stored body and signature).
func (v *Verifier) Verify(r *http.Request) ([]byte, error) {
	return v.verify(nil, r)
}

// verify is Verify; w, if not nil, is told when the body is too large,
// so that the server closes the connection instead of reading the rest.
func (v *Verifier) verify(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	keys := v.Keys
	if v.KeyFor != nil {
		keys = v.KeyFor(r)
	}
	if !hasKey(keys) {
		return nil, ErrNoKey
	}
	sigs, err := decodeSignatures(r.URL.Query()[SignatureParam])
	if err != nil {
		return nil, err
	}
	body, err := readBody(w, r, v.maxBody())
	if err != nil {
		return nil, err
	}
	if _, err := match(body, sigs, keys); err != nil {
		return nil, err
	}
	return body, nil
}

func (v *Verifier) maxBody() int64 {
	if v.MaxBody <= 0 {
		return DefaultMaxBody
	}
	return v.MaxBody
}

// readBody reads r's body, at most limit bytes, and puts the bytes back
// in r.Body.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, fmt.Errorf("%w: %d bytes, more than the %d allowed", ErrTooLarge, r.ContentLength, limit)
	}
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		var buf bytes.Buffer
		if r.ContentLength > 0 {
			buf.Grow(int(r.ContentLength) + bytes.MinRead)
		}
		_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit))
		r.Body.Close()
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, fmt.Errorf("%w: more than the %d bytes allowed", ErrTooLarge, limit)
		}
		if err != nil {
			return nil, fmt.Errorf("webhook: reading the body: %w", err)
		}
		body = buf.Bytes()
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	r.ContentLength = int64(len(body))
	return body, nil
}

// Handler returns a handler that verifies each request, then calls next
// with r.Body holding the verified bytes, readable again (GetBody and
// ContentLength set). It calls next only after the whole body is read and
// verified. Refused requests never reach next; they are answered
//
//   - 405 with "Allow: POST" for a method other than POST,
//   - 500 when no key is configured (ErrNoKey),
//   - 401 for a missing or bad signature,
//   - 413 for a body over MaxBody,
//   - 400 when the body cannot be read,
//
// and never 410, which would make PandaDoc disable the subscription at
// once. With Dedup set, a delivery already processed is answered 200
// without calling next, one being processed elsewhere 409 (PandaDoc's
// retry comes back later), and 503 when Dedup fails.
//
// What next answers reaches PandaDoc unchanged: answer 2xx within 20
// seconds (queue the work if it is longer), and never 410 unless the
// subscription is to be disabled. PandaDoc also disables a subscription
// that has answered other than 2xx for 7 days.
func (v *Verifier) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			v.refuse(w, r, http.StatusMethodNotAllowed, errMethod)
			return
		}
		body, err := v.verify(w, r)
		if err != nil {
			v.refuse(w, r, status(err), err)
			return
		}
		if v.Dedup == nil {
			next.ServeHTTP(w, r)
			return
		}
		v.serveOnce(w, r, body, next)
	})
}

// errMethod is the reason a request with another method than POST is
// refused.
var errMethod = errors.New("webhook: method not allowed, PandaDoc POSTs")

// status returns the status that answers a request Verify refused.
func status(err error) int {
	switch {
	case errors.Is(err, ErrNoKey):
		return http.StatusInternalServerError
	case errors.Is(err, ErrNoSignature), errors.Is(err, ErrBadSignature):
		return http.StatusUnauthorized
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	}
	return http.StatusBadRequest
}

// refuse answers a refused request with code, and logs why. The answer
// says which check failed, not more (how many keys, which limit).
func (v *Verifier) refuse(w http.ResponseWriter, r *http.Request, code int, err error) {
	reason := http.StatusText(code)
	for _, e := range []error{ErrNoKey, ErrNoSignature, ErrBadSignature, ErrTooLarge, errMethod} {
		if errors.Is(err, e) {
			reason = e.Error()
			break
		}
	}
	http.Error(w, reason, code)
	if v.Logger == nil {
		return
	}
	level, msg := slog.LevelWarn, "webhook: request refused"
	if errors.Is(err, ErrNoKey) {
		level, msg = slog.LevelError, "webhook: request refused: no shared key is configured, so every delivery is refused"
	}
	v.Logger.LogAttrs(r.Context(), level, msg,
		slog.Int("status", code),
		slog.String("reason", err.Error()),
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.String("remote", r.RemoteAddr))
}

// serveOnce calls next for a verified delivery unless Dedup knows it.
func (v *Verifier) serveOnce(w http.ResponseWriter, r *http.Request, body []byte, next http.Handler) {
	keys := DeliveryKeys(r, body)
	// The outcome is recorded even if the client has gone meanwhile.
	ctx := context.WithoutCancel(r.Context())
	state, err := v.Dedup.Claim(ctx, keys)
	if err != nil {
		v.logDedup(r, "webhook: dedup claim failed; the delivery is refused, PandaDoc retries it", err)
		http.Error(w, "webhook: deduplication unavailable", http.StatusServiceUnavailable)
		return
	}
	switch state {
	case Finished:
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "webhook: duplicate delivery, already processed\n")
		return
	case Running:
		http.Error(w, "webhook: this delivery is being processed", http.StatusConflict)
		return
	}
	sw := &statusWriter{ResponseWriter: w}
	settled := false
	defer func() {
		// next panicked: the delivery was not processed.
		if !settled {
			if err := v.Dedup.Release(ctx, keys); err != nil {
				v.logDedup(r, "webhook: dedup release failed", err)
			}
		}
	}()
	next.ServeHTTP(sw, r)
	settled = true
	if code := sw.code(); code >= 200 && code <= 299 {
		if err := v.Dedup.Done(ctx, keys); err != nil {
			v.logDedup(r, "webhook: dedup done failed; a retry of this delivery would run again", err)
		}
		return
	}
	if err := v.Dedup.Release(ctx, keys); err != nil {
		v.logDedup(r, "webhook: dedup release failed", err)
	}
}

func (v *Verifier) logDedup(r *http.Request, msg string, err error) {
	if v.Logger != nil {
		v.Logger.LogAttrs(r.Context(), slog.LevelError, msg,
			slog.String("error", err.Error()),
			slog.String("path", r.URL.Path))
	}
}

// statusWriter records the status that next answers.
type statusWriter struct {
	http.ResponseWriter
	status int // 0 until the header is written
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

// Flush flushes the response if the underlying writer can.
func (w *statusWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap returns the underlying writer, for http.ResponseController.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// code returns the status next answered: 200 if it wrote nothing, as
// net/http then does.
func (w *statusWriter) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// redacted stands for a key in the descriptions of a Verifier.
const redacted = "[redacted]"

// String describes v without its keys: how many there are, and which
// fields are set.
func (v Verifier) String() string {
	keys := make([]string, len(v.Keys))
	for i, k := range v.Keys {
		if k != "" {
			keys[i] = redacted
		}
	}
	return fmt.Sprintf("webhook.Verifier{Keys: %q, KeyFor: %s, MaxBody: %d, Logger: %s, Dedup: %s}",
		keys, set(v.KeyFor != nil), v.maxBody(), set(v.Logger != nil), set(v.Dedup != nil))
}

func set(ok bool) string {
	if ok {
		return "set"
	}
	return "nil"
}

// GoString is like String, for the %#v verb.
func (v Verifier) GoString() string { return v.String() }

// Format writes String for every verb, so that no verb of package fmt
// (%v, %+v, %s, %x, %d, …) prints a key.
func (v Verifier) Format(f fmt.State, _ rune) { io.WriteString(f, v.String()) }

// LogValue is like String, for log/slog.
func (v Verifier) LogValue() slog.Value { return slog.StringValue(v.String()) }

// MarshalJSON encodes v with "[redacted]" in place of each key.
func (v Verifier) MarshalJSON() ([]byte, error) {
	keys := make([]string, len(v.Keys))
	for i, k := range v.Keys {
		if k != "" {
			keys[i] = redacted
		}
	}
	return json.Marshal(struct {
		Keys    []string
		KeyFor  bool  `json:",omitempty"`
		MaxBody int64 `json:",omitempty"`
		Logger  bool  `json:",omitempty"`
		Dedup   bool  `json:",omitempty"`
	}{keys, v.KeyFor != nil, v.MaxBody, v.Logger != nil, v.Dedup != nil})
}
