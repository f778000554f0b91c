package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopandadoc/pandadocauth"
	"github.com/gopandadoc/pandadocauth/pandadoctest"
)

// The rate-limits phase: many creates from one grant against PandaDoc's
// limit of creates from a template, through go-pandadoc's style of retry
// and through a pandadocauth.Limiter.
const (
	demoDefaultCreates = 600
	demoMaxCreates     = 5000
	// demoRateWindow is the fake's window unless -rate-window says
	// otherwise: PandaDoc's 60 seconds, shortened so that the demo stays
	// fast.
	demoRateWindow = time.Second
	// demoLostEvery is how often a create's answer is lost: every
	// demoLostEvery-th create is done by the fake, and its caller gets a
	// 502 from a proxy in between.
	demoLostEvery = 50
	// go-pandadoc's RetryPolicy defaults: 2 retries, 200 ms doubling.
	goPandadocRetries = 2
	goPandadocBackoff = 200 * time.Millisecond
)

// rateStats is what one contender did in the rate-limits phase.
type rateStats struct {
	client    string
	creates   int
	workers   int
	created   int // answered 201
	throttled int // 429s the fake answered
	to429     int // creates whose caller got a 429
	to5xx     int // creates whose caller got a 5xx
	documents int // documents the fake holds
	dupes     int // documents created more than once
	lost      int // answers lost, the documents created
	wall      time.Duration
}

// rateContender builds the client of the rate-limits phase.
type rateContender struct {
	name string
	desc string
	// setup returns the client; base reaches the fake, window and limit
	// are the fake's.
	setup func(src *pandadocauth.TokenSource, base http.RoundTripper, window time.Duration, limit int) *http.Client
}

var rateContenders = []rateContender{
	{
		name: "go-pandadoc retries",
		desc: "429 retried twice within 0.6 s, POST retried on 5xx and network errors (go-pandadoc's RetryPolicy)",
		setup: func(src *pandadocauth.TokenSource, base http.RoundTripper, _ time.Duration, _ int) *http.Client {
			auth := &pandadocauth.Transport{Source: src, Base: base}
			return &http.Client{Transport: &goPandadocRetry{base: auth}, Timeout: demoRequestTimeout}
		},
	},
	{
		name: "pandadocauth.Limiter",
		desc: "a Limiter below the Transport: waits for a slot, retries 429s after PandaDoc's hint, never a POST that reached PandaDoc",
		setup: func(src *pandadocauth.TokenSource, base http.RoundTripper, window time.Duration, limit int) *http.Client {
			lim := &pandadocauth.Limiter{
				Base:   base,
				Window: window,
				// The jitter between a slot and the arrival does not
				// shrink with the window: a tenth of it here, where
				// PandaDoc's 60 s get Window/60, a second.
				Margin: window / 10,
				Limits: pandadocauth.Limits{CreateFromTemplate: limit},
			}
			return pandadocauth.NewClient(&http.Client{Transport: lim, Timeout: time.Minute}, src)
		},
	},
}

// runRateLimits runs the rate-limits phase with each contender in turn.
func runRateLimits(ctx context.Context, creates, workers int, window time.Duration) ([]rateStats, error) {
	var results []rateStats
	for _, rc := range rateContenders {
		results = append(results, runRateLimitsWith(ctx, rc, creates, workers, window))
		if err := ctx.Err(); err != nil {
			return results, fmt.Errorf("interrupted: %w", err)
		}
	}
	return results, nil
}

// demoRateLimit is the fake's limit of creates from a template for n
// creates: five sixths of them (500 for 600), as PandaDoc's 500 a minute.
func demoRateLimit(n int) int { return max(n*5/6, 1) }

// runRateLimitsWith sends creates creates from one grant through rc,
// from workers goroutines, against a fresh fake that throttles like
// PandaDoc over window.
func runRateLimitsWith(ctx context.Context, rc rateContender, creates, workers int, window time.Duration) rateStats {
	limit := demoRateLimit(creates)
	srv := pandadoctest.NewServer(pandadoctest.WithAPIKey("demo-list-key"),
		pandadoctest.WithRateLimits(pandadocauth.Limits{CreateFromTemplate: limit}), pandadoctest.WithRateWindow(window))
	defer srv.Close()
	tr := newHTTPTransport()
	tr.MaxIdleConnsPerHost = workers
	defer tr.CloseIdleConnections()
	src := &pandadocauth.TokenSource{Config: srv.Config(), Initial: srv.IssueToken()}
	defer src.Wait()
	lost := &lostAnswers{base: tr, every: demoLostEvery}
	client := rc.setup(src, lost, window, limit)

	var next atomic.Int64
	var created, to429, to5xx atomic.Int64
	var wg sync.WaitGroup
	t0 := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1))
				if i > creates || ctx.Err() != nil {
					return
				}
				switch status := createDocument(ctx, client, srv.URL, i); {
				case status == http.StatusCreated:
					created.Add(1)
				case status == http.StatusTooManyRequests:
					to429.Add(1)
				case status >= 500:
					to5xx.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	wall := time.Since(t0)
	docs, dupes := countDocuments(ctx, srv)
	return rateStats{
		client: rc.name, creates: creates, workers: workers, created: int(created.Load()),
		throttled: srv.Throttled(pandadocauth.ClassCreateFromTemplate),
		to429:     int(to429.Load()), to5xx: int(to5xx.Load()),
		documents: docs, dupes: dupes, lost: int(lost.n.Load()), wall: wall,
	}
}

// createDocument creates document i from a template and returns the
// status answered, 0 for an error.
func createDocument(ctx context.Context, client *http.Client, url string, i int) int {
	body := fmt.Sprintf(`{"name":"demo document %d","template_uuid":"demo-template"}`, i)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/public/v1/documents", strings.NewReader(body))
	if err != nil {
		return 0
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// countDocuments lists srv's documents, with an API key of their own so
// as to count against no limit of the grant's, and returns how many
// there are and how many of them repeat another's name.
func countDocuments(ctx context.Context, srv *pandadoctest.Server) (docs, dupes int) {
	client := &http.Client{Transport: &pandadocauth.APIKeyTransport{Key: "demo-list-key", Base: srv.Client().Transport}, Timeout: demoRequestTimeout}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/public/v1/documents", nil)
	if err != nil {
		return -1, -1
	}
	resp, err := client.Do(req)
	if err != nil {
		return -1, -1
	}
	defer resp.Body.Close()
	var list struct {
		Results []struct{ Name string } `json:"results"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return -1, -1
	}
	seen := make(map[string]bool, len(list.Results))
	for _, d := range list.Results {
		if seen[d.Name] {
			dupes++
		}
		seen[d.Name] = true
	}
	return len(list.Results), dupes
}

// lostAnswers is a RoundTripper in front of the fake that loses the
// answer of every every-th document created: the fake has created it,
// and the caller gets a 502, as from a proxy that timed out. Which
// creates lose their answer depends on the document, not on timing: the
// first 201 of each document whose number is a multiple of every.
type lostAnswers struct {
	base  http.RoundTripper
	every int
	lost  sync.Map     // the names of the documents whose answer was lost
	n     atomic.Int64 // answers lost
}

func (t *lostAnswers) RoundTrip(req *http.Request) (*http.Response, error) {
	name := ""
	if req.Method == http.MethodPost && req.GetBody != nil {
		if body, err := req.GetBody(); err == nil {
			var doc struct{ Name string }
			json.NewDecoder(body).Decode(&doc)
			body.Close()
			n, _ := strconv.Atoi(strings.TrimPrefix(doc.Name, "demo document "))
			if _, done := t.lost.Load(doc.Name); n > 0 && n%t.every == 0 && !done {
				name = doc.Name
			}
		}
	}
	resp, err := t.base.RoundTrip(req)
	if err != nil || name == "" || resp.StatusCode != http.StatusCreated {
		return resp, err
	}
	t.lost.Store(name, true)
	t.n.Add(1)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return &http.Response{
		StatusCode: http.StatusBadGateway, Status: "502 Bad Gateway", Proto: resp.Proto, ProtoMajor: resp.ProtoMajor, ProtoMinor: resp.ProtoMinor,
		Header: http.Header{"Content-Type": {"text/plain"}}, Body: io.NopCloser(strings.NewReader("bad gateway")), Request: req,
	}, nil
}

// goPandadocRetry retries as github.com/mrz1836/go-pandadoc's transport
// does by default: up to 2 retries, 200 ms doubling (Retry-After, if
// any, instead), on 429, on 5xx and on network errors, whatever the
// method. Its body is replayed from GetBody, as go-pandadoc re-encodes
// it.
type goPandadocRetry struct{ base http.RoundTripper }

func (t *goPandadocRetry) RoundTrip(req *http.Request) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		r := req
		if attempt > 0 && req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			r = req.Clone(req.Context())
			r.Body = body
		}
		resp, err := t.base.RoundTrip(r)
		retry := err != nil || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500
		if !retry || attempt == goPandadocRetries {
			return resp, err
		}
		wait := goPandadocBackoff << attempt
		if err == nil {
			if s, perr := strconv.Atoi(resp.Header.Get("Retry-After")); perr == nil && s >= 0 {
				wait = time.Duration(s) * time.Second
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-req.Context().Done():
			timer.Stop()
			return nil, req.Context().Err()
		}
	}
}

// printRateLimits writes the rate-limits phase's table.
func printRateLimits(w io.Writer, results []rateStats, window time.Duration) {
	if len(results) == 0 {
		return
	}
	n := results[0].creates
	fmt.Fprintf(w, "\nRate limits: %d creates from a template from one grant, %d at a time, against a fake\n"+
		"that throttles like PandaDoc: %d per %v (PandaDoc: 500 per minute; the window is shortened\n"+
		"so that the demo stays fast), and that loses the first 201 of every %dth create (a 502\n"+
		"from a proxy, the document created).\n", n, results[0].workers, demoRateLimit(n), window, demoLostEvery)
	for _, rc := range rateContenders {
		fmt.Fprintf(w, "  %-20s  %s\n", rc.name, rc.desc)
	}
	fmt.Fprintln(w)
	const format = "%-20s  %7v  %7v  %8v  %13v  %13v  %9v  %10v  %8v\n"
	fmt.Fprintf(w, format, "client", "creates", "created", "429s met", "429 to caller", "5xx to caller", "documents", "duplicates", "wall")
	for _, r := range results {
		fmt.Fprintf(w, format, r.client, r.creates, r.created, r.throttled, r.to429, r.to5xx, r.documents, r.dupes, formatWall(r.wall))
	}
	fmt.Fprintf(w, "\n429s met: answered by the fake; 429 to caller: creates that failed with one. duplicates:\n"+
		"documents created twice, by a retry after a 502. The Limiter returns the 502s: the create\n"+
		"may have happened, and PandaDoc has no idempotency key; tag creates with metadata and look\n"+
		"them up (GET /public/v1/documents?metadata_…) before creating again.\n")
}
