package pandadoctest

import (
	"fmt"
	"net/http"
	"time"

	"github.com/gopandadoc/pandadocauth/internal/fakepandadoc"
)

// A FaultKind says what a Fault makes the token endpoint do.
type FaultKind int

const (
	// KindSuccess answers normally, after the Fault's Delay. It is the
	// zero FaultKind, so the zero Fault is harmless.
	KindSuccess FaultKind = iota

	// KindRespond answers with the Fault's Status, ContentType, Header
	// and Body instead of the token endpoint's answer.
	KindRespond

	// KindHang answers nothing: the handler blocks until the client gives
	// up (its request context ends) or the server is closed, then drops
	// the connection.
	KindHang

	// KindReset resets the connection (TCP RST) without answering.
	KindReset

	// KindTruncated answers 200 with a token response cut in half: the
	// Content-Length is honest, the JSON is not complete.
	KindTruncated

	// KindOversized answers 200 with a JSON body of the Fault's Size
	// bytes: an object padded with spaces, which carries no token.
	KindOversized
)

// String returns the name of k, such as "KindHang".
func (k FaultKind) String() string {
	switch k {
	case KindSuccess:
		return "KindSuccess"
	case KindRespond:
		return "KindRespond"
	case KindHang:
		return "KindHang"
	case KindReset:
		return "KindReset"
	case KindTruncated:
		return "KindTruncated"
	case KindOversized:
		return "KindOversized"
	}
	return fmt.Sprintf("FaultKind(%d)", int(k))
}

// A Fault scripts one answer of the token endpoint; see Server.FailNext
// and Server.FailAlways. The constructors below build the common ones,
// and a Fault literal can combine the fields freely:
//
//	pandadoctest.Fault{
//		Kind:        pandadoctest.KindRespond,
//		Status:      400,
//		ContentType: "application/json",
//		Body:        `{"error":"invalid_grant"}`,
//		Delay:       50 * time.Millisecond,
//	}
//
// A Fault other than KindSuccess replaces the grant: the server does not
// carry it out, so a code stays unused and a refresh token stays valid,
// unless AfterGrant is set.
type Fault struct {
	// Kind is what the endpoint does. The zero value answers normally.
	Kind FaultKind

	// Status is the status code of a KindRespond answer; 0 means 500.
	Status int

	// ContentType is the Content-Type of a KindRespond answer; empty
	// means "text/plain; charset=utf-8".
	ContentType string

	// Header holds extra headers of a KindRespond answer, such as
	// Retry-After. It must not be modified once the Fault is queued.
	Header http.Header

	// Body is the body of a KindRespond answer.
	Body string

	// Size is the body size in bytes of a KindOversized answer; 0 means
	// 10 MiB.
	Size int

	// Delay is waited before the endpoint acts. The wait ends early,
	// without an answer, when the client gives up or the server is closed.
	Delay time.Duration

	// AfterGrant makes the server carry out the grant before the fault,
	// as when an answer is lost on its way back: the code is spent and,
	// with rotation on, the refresh token is replaced by one the client
	// never sees.
	AfterGrant bool
}

// WithDelay returns a copy of f that waits d before acting.
func (f Fault) WithDelay(d time.Duration) Fault {
	f.Delay = d
	return f
}

// Success returns a Fault that answers normally after delay.
func Success(delay time.Duration) Fault {
	return Fault{Kind: KindSuccess, Delay: delay}
}

// Status returns a Fault that answers code with its status text as a
// plain-text body, such as a proxy's 503.
func Status(code int) Fault {
	return Body(code, "text/plain; charset=utf-8", http.StatusText(code)+"\n")
}

// RetryAfter returns a Fault like Status(code) with a Retry-After header
// of after, which is sent as is ("1", or an HTTP date).
func RetryAfter(code int, after string) Fault {
	return Status(code).WithRetryAfter(after)
}

// TooManyRequests returns a Fault that answers 429 as PandaDoc does when
// a client exceeds its rate limit (a sliding window of 60 seconds): a
// JSON error body in the shape of PandaDoc's API errors and, like
// PandaDoc, no Retry-After header, so the client must choose its own
// back-off. WithRetryAfter adds one.
func TooManyRequests() Fault {
	return Body(http.StatusTooManyRequests, "application/json", rateLimitedBody)
}

// rateLimitedBody is the body of TooManyRequests.
const rateLimitedBody = `{"type":"rate_limit_error","detail":"Request was throttled."}`

// WithRetryAfter returns a copy of f that sends a Retry-After header of
// after, as is ("60", or an HTTP date), with a KindRespond answer. The
// copy's Header is a new map: f's is not modified.
func (f Fault) WithRetryAfter(after string) Fault {
	h := f.Header.Clone()
	if h == nil {
		h = http.Header{}
	}
	h.Set("Retry-After", after)
	f.Header = h
	return f
}

// Body returns a Fault that answers code with the given Content-Type and
// body, for example an RFC 6749 error:
//
//	pandadoctest.Body(400, "application/json", `{"error":"invalid_grant"}`)
func Body(code int, contentType, body string) Fault {
	return Fault{Kind: KindRespond, Status: code, ContentType: contentType, Body: body}
}

// HTMLPage returns a Fault that answers code with an HTML error page, as
// a load balancer or CDN in front of PandaDoc would.
func HTMLPage(code int) Fault {
	title := fmt.Sprintf("%d %s", code, http.StatusText(code))
	return Body(code, "text/html; charset=utf-8",
		"<!DOCTYPE html>\n<html><head><title>"+title+"</title></head>\n<body><h1>"+title+"</h1></body></html>\n")
}

// Hang returns a Fault that never answers; see KindHang.
func Hang() Fault {
	return Fault{Kind: KindHang}
}

// Reset returns a Fault that resets the connection; see KindReset.
func Reset() Fault {
	return Fault{Kind: KindReset}
}

// Truncated returns a Fault that answers an incomplete token JSON; see
// KindTruncated.
func Truncated() Fault {
	return Fault{Kind: KindTruncated}
}

// Oversized returns a Fault that answers a JSON body of n bytes (10 MiB
// if n <= 0); see KindOversized.
func Oversized(n int) Fault {
	return Fault{Kind: KindOversized, Size: n}
}

// engine returns f as the engine's Fault, whose kinds and fields are
// the same.
func (f Fault) engine() fakepandadoc.Fault {
	return fakepandadoc.Fault{
		Kind:        fakepandadoc.FaultKind(f.Kind),
		Status:      f.Status,
		ContentType: f.ContentType,
		Header:      f.Header,
		Body:        f.Body,
		Size:        f.Size,
		Delay:       f.Delay,
		AfterGrant:  f.AfterGrant,
	}
}
