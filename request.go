package pandadocauth

import (
	"io"
	"net/http"
	"strings"
)

// authorized returns the request to send for req: a shallow copy with
// body as its body and a header of its own, req's header with every case
// variant of Authorization replaced by auth. Nothing of req is modified,
// as the RoundTripper contract asks; the URL and the rest are shared,
// and never written. The header's values, auth's included, share one
// allocation, so that the copy costs three allocations in all.
func authorized(req *http.Request, body io.ReadCloser, auth string) *http.Request {
	r := new(http.Request)
	*r = *req
	r.Body = body
	n := 1
	for _, vs := range req.Header {
		n += len(vs)
	}
	vals := make([]string, 0, n)
	h := make(http.Header, len(req.Header)+1)
	for k, vs := range req.Header {
		if len(k) == len("Authorization") && strings.EqualFold(k, "Authorization") {
			continue // a non-canonical key would send a second header
		}
		if vs == nil {
			h[k] = nil
			continue
		}
		vals = append(vals, vs...)
		h[k] = vals[len(vals)-len(vs) : len(vals) : len(vals)]
	}
	vals = append(vals, auth)
	h["Authorization"] = vals[len(vals)-1:]
	r.Header = h
	return r
}
