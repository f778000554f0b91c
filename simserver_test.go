package pandadocauth

// The token endpoint and the API of the fleet simulation, in process: an
// http.RoundTripper per process as its token client's transport, and one
// as the Base of its Transports. The token endpoint rotates refresh
// tokens, and revokes a grant when a rotated-away refresh token is
// presented, as servers that detect reuse do (OAuth 2.1, ory/fosite).

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// simServer is the authorization server's state; the world's lock guards
// it.
type simServer struct {
	grants map[string]*simGrant
}

// simGrant is one grant: a chain of refresh tokens, numbered from 0, and
// the access tokens issued with them, numbered from 0.
type simGrant struct {
	key     string
	live    int  // the index of the refresh token that works
	revoked bool // reuse was detected: nothing works any more
	atSeq   int  // the last access token's index

	atExpiry map[int]time.Duration // access token -> its expiry (true Mono)
	atRT     map[int]int           // access token -> the refresh token issued with it
	rtIssued map[int]time.Duration // refresh token -> when it was issued (true Mono)
	forcedRT map[int]bool          // refresh token -> a caller needed the token issued with it replaced early
	rejectAT int                   // the API rejects access tokens below this index (a 401 storm)
}

func simTokenValue(key, kind string, n int) string {
	return fmt.Sprintf("%s-%s-SECRET-%d", key, kind, n)
}

// simTokenRT is the token endpoint as one process reaches it.
type simTokenRT struct{ inc *simInc }

func (t *simTokenRT) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body.Close()
	}
	form, _ := url.ParseQuery(string(body))
	rt := form.Get("refresh_token")
	r := t.inc.w.park(&simPark{kind: "post", inc: t.inc, key: simGrantOf(rt), f: flightFrom(req.Context()), rt: rt})
	if r.err != nil {
		return nil, r.err
	}
	h := r.header
	if h == nil {
		h = http.Header{}
	}
	return &http.Response{
		StatusCode:    r.status,
		Status:        strconv.Itoa(r.status) + " " + http.StatusText(r.status),
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          io.NopCloser(strings.NewReader(r.body)),
		ContentLength: int64(len(r.body)),
		Request:       req,
	}, nil
}

// The token endpoint's answers, chosen by the driver when it answers a
// POST. Those marked processed carry out the grant first.
var simPostOutcomes = []struct {
	name      string
	weight    int
	processed bool // the server rotates before answering (or detects reuse)
}{
	{"ok", 0, true}, // the weight of success is the schedule's
	{"500", 3, false},
	{"502-html", 2, false},
	{"503-retry-after", 1, false},
	{"429", 2, false},
	{"429-retry-after", 2, false},
	{"200-html", 2, false},
	{"200-huge-expires-in", 2, true},
	{"200-error-with-rt", 1, true},
	{"200-no-access-token", 1, true},
	{"hang", 1, false},
	{"reply-lost", 1, true},
}

// postLocked answers the POST p as outcome says. w.mu must be held.
func (w *simWorld) postLocked(p *simPark, outcome string, processed bool) (simReply, string) {
	g := w.srv.grants[p.key]
	k := simIndex(p.rt)
	jsonH := http.Header{"Content-Type": {"application/json"}}
	if !processed {
		switch outcome {
		case "500":
			return simReply{status: 500, header: jsonH, body: `{"error":"server_error"}`}, outcome
		case "502-html":
			return simReply{status: 502, header: http.Header{"Content-Type": {"text/html"}}, body: "<html><body>Bad Gateway</body></html>"}, outcome
		case "503-retry-after":
			return simReply{status: 503, header: http.Header{"Content-Type": {"text/plain"}, "Retry-After": {"1"}}, body: "unavailable"}, outcome
		case "429":
			return simReply{status: 429, header: jsonH, body: `{"error":"rate_limited"}`}, outcome
		case "429-retry-after":
			ra := "2"
			if w.rnd.IntN(3) == 0 {
				ra = "120"
			}
			return simReply{status: 429, header: http.Header{"Content-Type": {"application/json"}, "Retry-After": {ra}}, body: `{"error":"rate_limited"}`}, outcome + " " + ra
		case "200-html":
			return simReply{status: 200, header: http.Header{"Content-Type": {"text/html; charset=utf-8"}}, body: "<!doctype html><html><body>Maintenance</body></html>"}, outcome
		case "timeout":
			return simReply{err: errSimTimeout}, outcome
		}
		panic("sim: unknown outcome " + outcome)
	}
	invalid := simReply{status: 400, header: jsonH, body: `{"error":"invalid_grant","error_description":"The refresh token is invalid or revoked."}`}
	if outcome == "reply-lost" {
		invalid = simReply{err: errSimNet}
	}
	switch {
	case g == nil || k < 0:
		return invalid, outcome + ": unknown refresh token"
	case g.revoked:
		return invalid, outcome + ": grant revoked"
	case k != g.live:
		// Reuse detected: the whole grant is revoked.
		g.revoked = true
		w.revokedBy[p.key] = fmt.Sprintf("step %d: %s presented rt%d, live rt%d", w.stats.steps, p.inc.name, k, g.live)
		return invalid, fmt.Sprintf("%s: rt%d reused: GRANT REVOKED", outcome, k)
	}
	// The grant: a new access token, and a new refresh token if the
	// server rotates.
	now := time.Duration(w.mono.Load())
	w.checkRotationLocked(p, g, k, now)
	g.atSeq++
	at := g.atSeq
	g.atExpiry[at] = now + time.Duration(w.cfg.lifetime)*time.Second
	if w.cfg.rotate {
		g.live++
		g.rtIssued[g.live] = now
	}
	g.atRT[at] = g.live
	w.stats.rotations++
	note := fmt.Sprintf("%s: at%d rt%d", outcome, at, g.live)
	if outcome != "reply-lost" {
		sess := p.inc.sess[p.key]
		p.inc.see(p.key, g.live, fmt.Sprintf("a %s answer at step %d", outcome, w.stats.steps), sess != nil && !sess.lost)
		p.inc.got[p.key] = max(p.inc.got[p.key], g.live)
	}
	resp := map[string]any{
		"access_token": simTokenValue(p.key, "at", at),
		"token_type":   "Bearer",
		"expires_in":   w.cfg.lifetime,
		"scope":        "read+write",
	}
	if w.cfg.rotate {
		resp["refresh_token"] = simTokenValue(p.key, "rt", g.live)
	}
	switch outcome {
	case "200-huge-expires-in":
		resp["expires_in"] = 2147483647
	case "200-error-with-rt":
		delete(resp, "access_token")
		delete(resp, "expires_in")
		resp["error"] = "server_error"
	case "200-no-access-token":
		delete(resp, "access_token")
	case "reply-lost":
		return simReply{err: errSimNet}, note
	}
	if outcome != "ok" {
		// The access token issued is not one the client can use: the
		// refresh that replaces it is not early.
		g.forcedRT[g.live] = true
	}
	b, _ := json.Marshal(resp)
	return simReply{status: 200, header: http.Header{"Content-Type": {"application/json"}, "Cache-Control": {"no-store"}}, body: string(b)}, note
}

// simAPI is the API as one process reaches it: it answers 200 to a
// request carrying a current access token of the request's grant, and
// 401 to any other.
type simAPI struct{ inc *simInc }

func (a *simAPI) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		req.Body.Close()
	}
	w := a.inc.w
	key, _ := GrantFromContext(req.Context())
	at := strings.TrimPrefix(req.Header.Get("Authorization"), "Bearer ")
	w.mu.Lock()
	if a.inc.dead.Load() {
		w.mu.Unlock()
		return nil, errSimDead
	}
	status := 401
	if g := w.srv.grants[simGrantOf(at)]; g != nil {
		n := simIndex(at)
		if simGrantOf(at) != key {
			w.violate("%s sent grant %s's access token at%d on a request for grant %s", a.inc.name, simGrantOf(at), n, key)
		}
		exp, issued := g.atExpiry[n]
		switch {
		case !issued:
			w.violate("%s sent an access token the server never issued", a.inc.name)
		case g.revoked || n < g.rejectAT || time.Duration(w.mono.Load()) >= exp:
			g.forcedRT[g.atRT[n]] = true
			w.pending = append(w.pending, fmt.Sprintf("   api %s/%s at%d: 401", a.inc.name, key, n))
		default:
			status = 200
		}
	} else if at != "" {
		w.violate("%s sent an access token the server never issued", a.inc.name)
	}
	w.mu.Unlock()
	body := `{"results":[]}`
	if status == 401 {
		body = `{"type":"authentication_error","detail":"Authentication credentials were not provided."}`
	}
	return &http.Response{
		StatusCode:    status,
		Status:        strconv.Itoa(status) + " " + http.StatusText(status),
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}, nil
}

var (
	_ http.RoundTripper = (*simTokenRT)(nil)
	_ http.RoundTripper = (*simAPI)(nil)
)
