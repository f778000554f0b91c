package pandadoctest

import (
	"bytes"
	"io"
	"math"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gopandadoc/pandadocauth"
)

// DefaultRateWindow is the window of the server's rate limits unless
// WithRateWindow says otherwise: PandaDoc's, 60 seconds.
const DefaultRateWindow = time.Minute

// WithRateLimits makes the server throttle the API as PandaDoc does: per
// user (a grant, or the API key), per class (pandadocauth.ClassOf), a
// sliding log of the requests accepted in the last window (see
// WithRateWindow). A request past its class's limit is answered 429 with
// PandaDoc's body, {"type":"request_error","detail":"Request was
// throttled. Expected available in N seconds."}, and no Retry-After
// (see WithThrottleRetryAfter); it is not logged, so it does not count
// against the limit. A zero field of limits means the
// pandadocauth.DefaultLimits value, a negative one no limit. Without this
// option the server throttles nothing, but counts all the same (see
// MaxInWindow). See also Server.SetRateLimits.
func WithRateLimits(limits pandadocauth.Limits) Option {
	return func(s *Server) { s.throttleLocked().setLimits(limits) }
}

// WithRateWindow sets the window of the rate limits and of MaxInWindow;
// 0 or less means DefaultRateWindow. Tests shorten it, or move the
// server's clock (WithClock).
func WithRateWindow(d time.Duration) Option {
	return func(s *Server) {
		if d <= 0 {
			d = DefaultRateWindow
		}
		s.throttleLocked().window = d
	}
}

// WithThrottleRetryAfter makes a throttled answer carry Retry-After, the
// seconds of its body, as Django REST Framework's default handler does.
// PandaDoc documents none.
func WithThrottleRetryAfter() Option {
	return func(s *Server) { s.throttleLocked().retryAfter = true }
}

// SetRateLimits replaces the rate limits, as WithRateLimits sets them,
// from the next request on. The logs of what was accepted stay.
func (s *Server) SetRateLimits(limits pandadocauth.Limits) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.throttleLocked().setLimits(limits)
}

// MaxInWindow returns the most requests of class that arrived from one
// user in any window, throttled ones included: what a client that keeps
// to the limit never takes above it. Only authenticated requests count.
func (s *Server) MaxInWindow(class pandadocauth.Class) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.throttleLocked().maxIn[class]
}

// Throttled returns how many requests of class were answered 429.
func (s *Server) Throttled(class pandadocauth.Class) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.throttleLocked().throttled[class]
}

// ClassRequests returns how many authenticated requests of class
// arrived, throttled ones included.
func (s *Server) ClassRequests(class pandadocauth.Class) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.throttleLocked().requests[class]
}

// numClasses is the number of pandadocauth's classes.
const numClasses = int(pandadocauth.ClassNotarization) + 1

// throttle is a Server's rate limiting, guarded by the Server's mu.
type throttle struct {
	on         bool
	limits     [numClasses]int // 0: no limit
	window     time.Duration
	retryAfter bool

	accepted map[throttleKey][]time.Time // the sliding logs: what was accepted, oldest first
	arrived  map[throttleKey][]time.Time // what arrived in the last window, for maxIn

	maxIn     [numClasses]int
	throttled [numClasses]int
	requests  [numClasses]int
}

// throttleKey names a log: a user and a class.
type throttleKey struct {
	user  any // a grant of the engine (UserOf), or apiKeyUser
	class pandadocauth.Class
}

// apiKeyUser is the user of the API key.
type apiKeyUser struct{}

// throttleLocked returns the server's throttle, making it. s.mu must be
// held, or the server not started.
func (s *Server) throttleLocked() *throttle {
	if s.throttle == nil {
		s.throttle = &throttle{window: DefaultRateWindow, accepted: map[throttleKey][]time.Time{}, arrived: map[throttleKey][]time.Time{}}
	}
	return s.throttle
}

func (t *throttle) setLimits(l pandadocauth.Limits) {
	t.on = true
	for c := range numClasses {
		t.limits[c] = limitOf(l, pandadocauth.Class(c))
	}
}

// limitOf returns the limit of class c in l, as a Limiter reads it: 0
// for none.
func limitOf(l pandadocauth.Limits, c pandadocauth.Class) int {
	pick := func(l pandadocauth.Limits) int {
		switch c {
		case pandadocauth.ClassCreateFromPDF:
			return l.CreateFromPDF
		case pandadocauth.ClassCreateFromTemplate:
			return l.CreateFromTemplate
		case pandadocauth.ClassSend:
			return l.Send
		case pandadocauth.ClassDetails:
			return l.Details
		case pandadocauth.ClassListStatusDelete:
			return l.ListStatusDelete
		case pandadocauth.ClassDownload:
			return l.Download
		case pandadocauth.ClassDownloadProtected:
			return l.DownloadProtected
		case pandadocauth.ClassNotarization:
			return l.Notarization
		}
		return l.Other
	}
	n := pick(l)
	if n == 0 {
		n = pick(pandadocauth.DefaultLimits)
	}
	return max(n, 0)
}

// throttled counts an authenticated API request of user and, if the
// rate limits are on and the request's class is past its limit,
// answers 429 and reports true. It reads the body of a document
// creation, to tell a PDF from a template, and puts it back.
func (s *Server) throttled(w http.ResponseWriter, r *http.Request, user any) bool {
	class := classOfServed(w, r)
	now := s.now()
	s.mu.Lock()
	t := s.throttleLocked()
	k := throttleKey{user, class}
	t.requests[class]++
	arr := keepWindow(t.arrived[k], now, t.window)
	arr = append(arr, now)
	t.arrived[k] = arr
	t.maxIn[class] = max(t.maxIn[class], len(arr))
	hist := keepWindow(t.accepted[k], now, t.window)
	limit := t.limits[class]
	if !t.on || limit == 0 || len(hist) < limit {
		t.accepted[k] = append(hist, now)
		s.mu.Unlock()
		return false
	}
	t.accepted[k] = hist
	t.throttled[class]++
	retryAfter := t.retryAfter
	// Django REST Framework's SimpleRateThrottle.wait: until the oldest
	// entry leaves the window, spread over the requests available.
	detail := "Request was throttled."
	wait := -1
	if available := limit - len(hist) + 1; available > 0 {
		remaining := t.window - now.Sub(hist[0])
		wait = int(math.Ceil(remaining.Seconds() / float64(available)))
		unit := "seconds"
		if wait == 1 {
			unit = "second"
		}
		detail += " Expected available in " + strconv.Itoa(wait) + " " + unit + "."
	}
	s.mu.Unlock()
	if retryAfter && wait >= 0 {
		w.Header().Set("Retry-After", strconv.Itoa(wait))
	}
	s.apiJSON(w, http.StatusTooManyRequests, apiError{"request_error", detail})
	return true
}

// keepWindow drops the times of log that are not after now-window, as
// Django REST Framework does.
func keepWindow(log []time.Time, now time.Time, window time.Duration) []time.Time {
	i := 0
	for i < len(log) && !log[i].After(now.Add(-window)) {
		i++
	}
	if i == len(log) {
		return log[:0]
	}
	return log[i:]
}

// classOfServed is pandadocauth.ClassOf for a request the server
// received: the body of a document creation is read, bounded, and put
// back, for ClassOf to read through GetBody.
func classOfServed(w http.ResponseWriter, r *http.Request) pandadocauth.Class {
	if r.Method != http.MethodPost || strings.TrimSuffix(r.URL.Path, "/") != "/public/v1/documents" || r.URL.Query().Has("upload") {
		return pandadocauth.ClassOf(r)
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err == nil && strings.HasPrefix(mt, "multipart/") {
		return pandadocauth.ClassOf(r)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxDocumentBytes))
	r.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		return pandadocauth.ClassCreateFromPDF
	}
	r2 := r.Clone(r.Context())
	r2.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	return pandadocauth.ClassOf(r2)
}

// userOf returns the user an authenticated request's Authorization
// header names: the grant of its access token, or the API key's user.
func (s *Server) userOf(h string) any {
	scheme, cred, _ := strings.Cut(h, " ")
	if strings.EqualFold(scheme, "API-Key") {
		return apiKeyUser{}
	}
	if g, ok := s.eng.UserOf(strings.TrimSpace(cred)); ok {
		return g
	}
	return apiKeyUser{}
}
