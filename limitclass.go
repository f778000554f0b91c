package pandadocauth

import (
	"context"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync/atomic"
)

// Class is the operation class of a request to the PandaDoc API: the
// rows of PandaDoc's table of rate limits. PandaDoc counts each class of
// each user apart ("not cumulative"), over a sliding window of 60 seconds.
type Class uint8

// The classes, as PandaDoc's limits page names them
// (https://developers.pandadoc.com/reference/limits).
const (
	// ClassOther is every operation PandaDoc publishes no figure for:
	// contacts, fields, recipients, attachments, webhooks, folders, and
	// the rest.
	ClassOther Class = iota
	// ClassCreateFromPDF is POST /public/v1/documents with an upload
	// (?upload, or a multipart body) or a JSON body with "url".
	ClassCreateFromPDF
	// ClassCreateFromTemplate is POST /public/v1/documents with a JSON
	// body with "template_uuid".
	ClassCreateFromTemplate
	// ClassSend is POST /public/v1/documents/{id}/send.
	ClassSend
	// ClassDetails is GET …/{id}/details of documents, templates and
	// content-library items.
	ClassDetails
	// ClassListStatusDelete is the list (GET /public/v1/documents),
	// status (GET /public/v1/documents/{id}) and delete (DELETE
	// /public/v1/documents/{id}) of documents, and the same routes of
	// templates and content-library items. PandaDoc lists them on one
	// row, so they share one limit.
	ClassListStatusDelete
	// ClassDownload is GET /public/v1/documents/{id}/download.
	ClassDownload
	// ClassDownloadProtected is GET
	// /public/v1/documents/{id}/download-protected.
	ClassDownloadProtected
	// ClassNotarization is POST /public/v2/notary/notarization-requests.
	ClassNotarization

	numClasses = iota
)

var classNames = [numClasses]string{
	"other", "create_from_pdf", "create_from_template", "send", "details",
	"list_status_delete", "download", "download_protected", "notarization",
}

// String returns the class as a metric attribute value, such as
// "create_from_template".
func (c Class) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return "unknown"
}

// Limits are requests per window, per class: the fields are the rows of
// PandaDoc's table. In a Limiter, a zero field means the DefaultLimits
// value (or SandboxLimit, with Limiter.Sandbox) and a negative one means
// no limit.
type Limits struct {
	CreateFromPDF      int
	CreateFromTemplate int
	Send               int
	Details            int
	ListStatusDelete   int
	Download           int
	DownloadProtected  int
	Notarization       int
	Other              int
}

// DefaultLimits are PandaDoc's published limits, in requests per minute
// and per user.
//
// Two sources disagree, and the newer wins. PandaDoc's limits page
// (https://developers.pandadoc.com/reference/limits) lists Create from
// PDF 50, Create from template 300, Send 200, Details 300, List, Status,
// Delete 2000, Download 50, Download protected 300, Notarization 100.
// PandaDoc's changelog of 2025-06-11, "Public API Rate Limit Updates"
// (https://developers.pandadoc.com/changelog/public-api-rate-limit-updates),
// raised five of them: Create from PDF to 300, Create from template to
// 500, Details to 600, Download to 100, Send to 400. The defaults are the
// changelog's figures and the page's for the other three.
//
// Other is -1: PandaDoc publishes no figure for it, so it is not limited
// up front; a 429 teaches the Limiter the real limit (see Limiter).
//
// An account whose limits differ sets Limiter.Limits; every field can be
// overridden.
var DefaultLimits = Limits{
	CreateFromPDF:      300,
	CreateFromTemplate: 500,
	Send:               400,
	Details:            600,
	ListStatusDelete:   2000,
	Download:           100,
	DownloadProtected:  300,
	Notarization:       100,
	Other:              -1,
}

// SandboxLimit is PandaDoc's limit in its sandbox, per minute, for any
// endpoint: the default of every class with Limiter.Sandbox.
const SandboxLimit = 10

// get returns the limit of class c.
func (l *Limits) get(c Class) int {
	switch c {
	case ClassCreateFromPDF:
		return l.CreateFromPDF
	case ClassCreateFromTemplate:
		return l.CreateFromTemplate
	case ClassSend:
		return l.Send
	case ClassDetails:
		return l.Details
	case ClassListStatusDelete:
		return l.ListStatusDelete
	case ClassDownload:
		return l.Download
	case ClassDownloadProtected:
		return l.DownloadProtected
	case ClassNotarization:
		return l.Notarization
	}
	return l.Other
}

type classCtxKey struct{}

// classSet reports whether WithClass has ever been called. Until then no
// context carries a class, and classFor skips the context lookup, which
// walks the whole chain of the request's context when it finds nothing.
var classSet atomic.Bool

// WithClass returns a copy of ctx that makes a Limiter count the request
// sent with it as class c, instead of what ClassOf says. Use it for a
// route ClassOf does not know, or for a create whose body ClassOf cannot
// read (no GetBody).
func WithClass(ctx context.Context, c Class) context.Context {
	// Set before the context exists: whoever is handed the context
	// (which takes synchronization of its own) sees the flag set.
	if !classSet.Load() {
		classSet.Store(true)
	}
	return context.WithValue(ctx, classCtxKey{}, c)
}

// classFor returns the class WithClass put in req's context, else
// ClassOf(req).
func classFor(req *http.Request) Class {
	if classSet.Load() {
		if c, ok := req.Context().Value(classCtxKey{}).(Class); ok {
			return c
		}
	}
	return ClassOf(req)
}

// maxClassifyBytes bounds how much of a create's body ClassOf reads to
// find "template_uuid" or "url".
const maxClassifyBytes = 64 << 10

// ClassOf returns the class PandaDoc counts req in, from its method and
// path (a trailing slash ignored, any {id}), as the table in Class's
// constants says; anything else is ClassOther.
//
// POST /public/v1/documents needs the body: an upload (?upload, or a
// multipart/form-data body) is ClassCreateFromPDF, and so is a JSON body
// with "url"; one with "template_uuid" is ClassCreateFromTemplate. ClassOf
// reads at most 64 KiB of the body, and only from a fresh copy that
// req.GetBody returns, never from req.Body. Without GetBody, or when the
// body says neither, it is ClassCreateFromPDF, the lower limit.
//
// ClassOf does not look at the host: a Limiter is meant to be used for
// requests to PandaDoc.
func ClassOf(req *http.Request) Class {
	if req.URL == nil {
		return ClassOther
	}
	// Written out with indexes and constant prefixes: it runs on every
	// request.
	p := req.URL.Path
	if n := len(p); n > 1 && p[n-1] == '/' {
		p = p[:n-1]
	}
	// "/public/v1/", and something after it.
	const v1 = "/public/v1/"
	if len(p) <= len(v1) || p[:len(v1)] != v1 {
		if p == "/public/v2/notary/notarization-requests" && req.Method == http.MethodPost {
			return ClassNotarization
		}
		return ClassOther
	}
	rest := p[len(v1):]
	get := req.Method == http.MethodGet || req.Method == "" || req.Method == http.MethodHead
	// The kinds are compared as constants, which the compiler writes
	// out inline.
	const documents, templates, items = "documents", "templates", "content-library-items"
	if rest == documents && get {
		// The list, the most frequent request of all.
		return ClassListStatusDelete
	}
	var tail string
	var ok bool
	switch {
	case len(rest) >= len(documents) && rest[:len(documents)] == documents:
		if tail, ok = afterSegment(rest, len(documents)); !ok {
			return ClassOther
		}
		var id, sub string
		if tail != "" {
			id, sub = splitID(tail)
		}
		switch {
		case id == "" && get:
			return ClassListStatusDelete
		case id == "" && req.Method == http.MethodPost:
			return createClass(req)
		case id == "":
			return ClassOther
		case sub == "" && (get || req.Method == http.MethodDelete):
			return ClassListStatusDelete
		case sub == "send" && req.Method == http.MethodPost:
			return ClassSend
		case sub == "details" && get:
			return ClassDetails
		case sub == "download" && get:
			return ClassDownload
		case sub == "download-protected" && get:
			return ClassDownloadProtected
		}
		return ClassOther
	case len(rest) >= len(templates) && rest[:len(templates)] == templates:
		tail, ok = afterSegment(rest, len(templates))
	case len(rest) >= len(items) && rest[:len(items)] == items:
		tail, ok = afterSegment(rest, len(items))
	}
	if ok {
		id, sub := splitID(tail)
		switch {
		case id == "" && get:
			return ClassListStatusDelete
		case id != "" && sub == "" && (get || req.Method == http.MethodDelete):
			return ClassListStatusDelete
		case id != "" && sub == "details" && get:
			return ClassDetails
		}
	}
	return ClassOther
}

// afterSegment reports whether the first n bytes of the path p are its
// first segment (p ends there, or a slash follows), and returns what
// follows the slash.
func afterSegment(p string, n int) (rest string, ok bool) {
	if len(p) == n {
		return "", true
	}
	if p[n] != '/' {
		return "", false
	}
	return p[n+1:], true
}

// splitID splits "id/sub…" at its first slash.
func splitID(p string) (id, sub string) {
	if p == "" {
		return "", ""
	}
	if i := strings.IndexByte(p, '/'); i >= 0 {
		return p[:i], p[i+1:]
	}
	return p, ""
}

// createClass is ClassOf for POST /public/v1/documents.
func createClass(req *http.Request) Class {
	if req.URL.Query().Has("upload") {
		return ClassCreateFromPDF
	}
	if mt, _, err := mime.ParseMediaType(req.Header.Get("Content-Type")); err == nil && strings.HasPrefix(mt, "multipart/") {
		return ClassCreateFromPDF
	}
	if req.GetBody == nil {
		return ClassCreateFromPDF
	}
	body, err := req.GetBody()
	if err != nil || body == nil {
		return ClassCreateFromPDF
	}
	defer body.Close()
	if hasTopLevelKey(io.LimitReader(body, maxClassifyBytes), "template_uuid") {
		return ClassCreateFromTemplate
	}
	return ClassCreateFromPDF
}

// hasTopLevelKey reports whether r holds a JSON object with the member
// key at its top level, as far as it can be read.
func hasTopLevelKey(r io.Reader, key string) bool {
	dec := json.NewDecoder(r)
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return false
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return false
		}
		if k, _ := t.(string); k == key {
			return true
		}
		if !skipValue(dec) {
			return false
		}
	}
	return false
}

// skipValue reads one JSON value from dec, reporting whether it could.
func skipValue(dec *json.Decoder) bool {
	depth := 0
	for {
		t, err := dec.Token()
		if err != nil {
			return false
		}
		switch t {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
		if depth == 0 {
			return true
		}
	}
}
