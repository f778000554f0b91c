package pandadocauth

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		header []string // nil: no Retry-After
		want   time.Duration
		ok     bool
	}{
		{"absent", nil, 0, false},
		{"empty", []string{""}, 0, false},
		{"delay-seconds", []string{"13"}, 13 * time.Second, true},
		{"delay-seconds with spaces", []string{" 7 "}, 7 * time.Second, true},
		{"zero", []string{"0"}, 0, true},
		{"negative", []string{"-5"}, 0, false},
		{"HTTP-date ahead", []string{now.Add(90 * time.Second).Format(http.TimeFormat)}, 90 * time.Second, true},
		{"HTTP-date past", []string{now.Add(-time.Hour).Format(http.TimeFormat)}, 0, true},
		{"not a number nor a date", []string{"soon"}, 0, false},
		{"fraction", []string{"1.5"}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.header != nil {
				h["Retry-After"] = tt.header
			}
			got, ok := retryAfter(h, now)
			if got != tt.want || ok != tt.ok {
				t.Errorf("retryAfter(%q) = %v, %v; want %v, %v", tt.header, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// TestTokenEndpointRetryAfterCapped: a token endpoint's Retry-After is
// read as at most maxRetryAfter, in seconds and as a date, on the clock
// passed in.
func TestTokenEndpointRetryAfterCapped(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		value string
		want  time.Duration
	}{
		{"120", 2 * time.Minute},
		{"7200", maxRetryAfter},
		{now.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second},
		{now.Add(3 * time.Hour).Format(http.TimeFormat), maxRetryAfter},
	} {
		resp := &http.Response{
			StatusCode: http.StatusServiceUnavailable,
			Header:     http.Header{"Retry-After": {tt.value}},
			Body:       io.NopCloser(strings.NewReader("")),
		}
		_, aerr := readTokenResponse(context.Background(), resp, []string{"client-secret", "rt-1"}, now)
		if aerr == nil || !aerr.transient {
			t.Fatalf("Retry-After %q: %+v, want a transient failure", tt.value, aerr)
		}
		if aerr.retryAfter != tt.want {
			t.Errorf("Retry-After %q: read as %v, want %v", tt.value, aerr.retryAfter, tt.want)
		}
	}
}
