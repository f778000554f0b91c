package pandadocauth

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestClassOf is the table of PandaDoc's limits, row by row: which
// requests count in which class.
func TestClassOf(t *testing.T) {
	const base = "https://api.pandadoc.com"
	tests := []struct {
		method, path string
		contentType  string
		body         string // with GetBody unless noGetBody
		noGetBody    bool
		want         Class
	}{
		// Create from PDF: an upload, or a JSON body with "url".
		{method: "POST", path: "/public/v1/documents?upload", contentType: "multipart/form-data; boundary=x", want: ClassCreateFromPDF},
		{method: "POST", path: "/public/v1/documents?upload", want: ClassCreateFromPDF},
		{method: "POST", path: "/public/v1/documents", contentType: "multipart/form-data; boundary=x", body: "--x--", want: ClassCreateFromPDF},
		{method: "POST", path: "/public/v1/documents", contentType: "application/json", body: `{"name":"n","url":"https://example.com/a.pdf"}`, want: ClassCreateFromPDF},
		{method: "POST", path: "/public/v1/documents", body: `{"name":"n"}`, want: ClassCreateFromPDF},
		{method: "POST", path: "/public/v1/documents", body: `{"template_uuid":"x"}`, noGetBody: true, want: ClassCreateFromPDF},
		{method: "POST", path: "/public/v1/documents", body: `not json`, want: ClassCreateFromPDF},
		// Create from template: a JSON body with "template_uuid", at the top level only.
		{method: "POST", path: "/public/v1/documents", contentType: "application/json", body: `{"name":"n","template_uuid":"hryJY9mqYZHjQCYQuSjRQg"}`, want: ClassCreateFromTemplate},
		{method: "POST", path: "/public/v1/documents/", body: `{"recipients":[{"email":"a@b.c"}],"tokens":{"a":[1,{"b":2}]},"template_uuid":"t"}`, want: ClassCreateFromTemplate},
		{method: "POST", path: "/public/v1/documents", body: `{"metadata":{"template_uuid":"t"},"url":"u"}`, want: ClassCreateFromPDF},
		{method: "POST", path: "/public/v1/documents", body: `{"name":"` + strings.Repeat("x", maxClassifyBytes) + `","template_uuid":"t"}`, want: ClassCreateFromPDF},
		// Send.
		{method: "POST", path: "/public/v1/documents/abc/send", want: ClassSend},
		{method: "POST", path: "/public/v1/documents/abc/send/", want: ClassSend},
		{method: "GET", path: "/public/v1/documents/abc/send", want: ClassOther},
		// Details of documents, templates and content-library items.
		{method: "GET", path: "/public/v1/documents/abc/details", want: ClassDetails},
		{method: "GET", path: "/public/v1/templates/abc/details", want: ClassDetails},
		{method: "GET", path: "/public/v1/content-library-items/abc/details", want: ClassDetails},
		{method: "HEAD", path: "/public/v1/documents/abc/details", want: ClassDetails},
		// List, status, delete.
		{method: "GET", path: "/public/v1/documents", want: ClassListStatusDelete},
		{method: "GET", path: "/public/v1/documents?metadata_request_id=42", want: ClassListStatusDelete},
		{method: "", path: "/public/v1/documents/", want: ClassListStatusDelete},
		{method: "GET", path: "/public/v1/documents/abc", want: ClassListStatusDelete},
		{method: "DELETE", path: "/public/v1/documents/abc", want: ClassListStatusDelete},
		{method: "GET", path: "/public/v1/templates", want: ClassListStatusDelete},
		{method: "GET", path: "/public/v1/templates/abc", want: ClassListStatusDelete},
		{method: "DELETE", path: "/public/v1/templates/abc", want: ClassListStatusDelete},
		{method: "GET", path: "/public/v1/content-library-items", want: ClassListStatusDelete},
		{method: "GET", path: "/public/v1/content-library-items/abc", want: ClassListStatusDelete},
		// Downloads.
		{method: "GET", path: "/public/v1/documents/abc/download", want: ClassDownload},
		{method: "GET", path: "/public/v1/documents/abc/download-protected", want: ClassDownloadProtected},
		// Notarization.
		{method: "POST", path: "/public/v2/notary/notarization-requests", want: ClassNotarization},
		{method: "GET", path: "/public/v2/notary/notarization-requests", want: ClassOther},
		// Everything else.
		{method: "PATCH", path: "/public/v1/documents/abc", want: ClassOther},
		{method: "PUT", path: "/public/v1/documents", want: ClassOther},
		{method: "POST", path: "/public/v1/documents/abc/fields", want: ClassOther},
		{method: "GET", path: "/public/v1/documents/abc/fields", want: ClassOther},
		{method: "GET", path: "/public/v1/contacts", want: ClassOther},
		{method: "POST", path: "/public/v1/templates", want: ClassOther},
		{method: "GET", path: "/public/v1/webhook-subscriptions", want: ClassOther},
		{method: "GET", path: "/public/v2/documents", want: ClassOther},
		{method: "POST", path: "/oauth2/access_token", want: ClassOther},
		{method: "GET", path: "/", want: ClassOther},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path+" "+tt.body[:min(len(tt.body), 30)], func(t *testing.T) {
			var body io.Reader
			if tt.body != "" {
				body = &trackedBody{Reader: strings.NewReader(tt.body)}
			}
			req, err := http.NewRequest(tt.method, base+tt.path, body)
			if err != nil {
				t.Fatal(err)
			}
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			if tt.noGetBody {
				req.GetBody = nil
			} else if tt.body != "" {
				req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(tt.body)), nil }
			}
			if got := ClassOf(req); got != tt.want {
				t.Errorf("ClassOf = %v, want %v", got, tt.want)
			}
			if tb, ok := body.(*trackedBody); ok {
				// ClassOf must not touch req.Body.
				if n := tb.closes.Load(); n != 0 {
					t.Errorf("req.Body closed %d times by ClassOf", n)
				}
				if b, _ := io.ReadAll(tb); string(b) != tt.body {
					t.Errorf("req.Body was read by ClassOf: %q left", b)
				}
			}
		})
	}
}

// TestClassOfGetBodyFails: a GetBody that fails counts the create as
// the lower limit, Create from PDF.
func TestClassOfGetBodyFails(t *testing.T) {
	req, _ := http.NewRequest("POST", apiURL, strings.NewReader(`{"template_uuid":"t"}`))
	req.GetBody = func() (io.ReadCloser, error) { return nil, errors.New("gone") }
	if got := ClassOf(req); got != ClassCreateFromPDF {
		t.Errorf("ClassOf = %v, want %v", got, ClassCreateFromPDF)
	}
}

// TestWithClass overrides ClassOf for one request.
func TestWithClass(t *testing.T) {
	req, _ := http.NewRequestWithContext(WithClass(context.Background(), ClassSend), "GET", apiURL, nil)
	if got := classFor(req); got != ClassSend {
		t.Errorf("classFor = %v, want %v", got, ClassSend)
	}
	if got := ClassOf(req); got != ClassListStatusDelete {
		t.Errorf("ClassOf = %v, want %v: WithClass is the Limiter's override, not ClassOf's", got, ClassListStatusDelete)
	}
}

// TestClassString: every class has a name, for metrics.
func TestClassString(t *testing.T) {
	want := []string{"other", "create_from_pdf", "create_from_template", "send", "details", "list_status_delete", "download", "download_protected", "notarization"}
	for c := Class(0); c < numClasses; c++ {
		if got := c.String(); got != want[c] {
			t.Errorf("Class(%d).String() = %q, want %q", c, got, want[c])
		}
	}
	if got := Class(200).String(); got != "unknown" {
		t.Errorf("Class(200).String() = %q", got)
	}
}

// TestLimiterLimits: zero fields take DefaultLimits (the changelog of
// 2025-06-11, the limits page for the rest), or SandboxLimit with
// Sandbox; negative ones mean no limit.
func TestLimiterLimits(t *testing.T) {
	want := map[Class]int{
		ClassCreateFromPDF: 300, ClassCreateFromTemplate: 500, ClassSend: 400, ClassDetails: 600,
		ClassListStatusDelete: 2000, ClassDownload: 100, ClassDownloadProtected: 300, ClassNotarization: 100,
		ClassOther: 0,
	}
	var zero Limiter
	sandbox := Limiter{Sandbox: true, Limits: Limits{Send: 3}}
	custom := Limiter{Limits: Limits{CreateFromTemplate: 2000, Download: -1, Other: 50}}
	for c := Class(0); c < numClasses; c++ {
		if got := zero.limit(c); got != want[c] {
			t.Errorf("default limit of %v = %d, want %d", c, got, want[c])
		}
		wantSandbox := SandboxLimit
		if c == ClassSend {
			wantSandbox = 3
		}
		if got := sandbox.limit(c); got != wantSandbox {
			t.Errorf("sandbox limit of %v = %d, want %d", c, got, wantSandbox)
		}
		wantCustom := want[c]
		switch c {
		case ClassCreateFromTemplate:
			wantCustom = 2000
		case ClassDownload:
			wantCustom = 0
		case ClassOther:
			wantCustom = 50
		}
		if got := custom.limit(c); got != wantCustom {
			t.Errorf("custom limit of %v = %d, want %d", c, got, wantCustom)
		}
	}
}

// TestClassOfPaths checks ClassOf, written out with indexes for speed,
// against the plain reading of the table: split the path at its
// slashes, then match kind, id and sub. It covers each route with and
// without an id, a sub-path, a trailing slash, a double slash, a wrong
// version, a longer or shorter name, and every method.
func TestClassOfPaths(t *testing.T) {
	kinds := []string{"documents", "templates", "content-library-items", "document", "documentsx", "contacts", "notary", ""}
	tails := []string{"", "/", "//", "/abc", "/abc/", "/abc/send", "/abc/send/", "/abc/details", "/abc/download",
		"/abc/download-protected", "/abc/fields", "/abc/details/x", "//details", "/notarization-requests", "/notarization-requests/"}
	prefixes := []string{"/public/v1/", "/public/v2/", "/public/v3/", "/public/v1", "/public/", "/public/vv/", "/private/v1/", "public/v1/", "/public/v1x", ""}
	methods := []string{"", "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "get"}
	n := 0
	for _, prefix := range prefixes {
		for _, kind := range kinds {
			for _, tail := range tails {
				for _, method := range methods {
					path := prefix + kind + tail
					req, err := http.NewRequest(method, "https://api.pandadoc.com"+path, nil)
					if err != nil {
						continue // PATCH and the rest are valid; "get" is too
					}
					req.URL.Path = path // unparsed, as a caller may set it
					if got, want := ClassOf(req), referenceClassOf(req); got != want {
						t.Errorf("ClassOf(%s %q) = %v, want %v", method, path, got, want)
					}
					n++
				}
			}
		}
	}
	if n < 1000 {
		t.Fatalf("only %d requests checked", n)
	}
}

// referenceClassOf is ClassOf as the table reads, without regard to
// speed.
func referenceClassOf(req *http.Request) Class {
	p := strings.TrimSuffix(req.URL.Path, "/")
	if p == "" {
		p = req.URL.Path
	}
	get := req.Method == http.MethodGet || req.Method == "" || req.Method == http.MethodHead
	if rest, ok := strings.CutPrefix(p, "/public/v2/"); ok && rest != "" {
		if rest == "notary/notarization-requests" && req.Method == http.MethodPost {
			return ClassNotarization
		}
		return ClassOther
	}
	rest, ok := strings.CutPrefix(p, "/public/v1/")
	if !ok || rest == "" {
		return ClassOther
	}
	parts := strings.SplitN(rest, "/", 3)
	for len(parts) < 3 {
		parts = append(parts, "")
	}
	kind, id, sub := parts[0], parts[1], parts[2]
	switch kind {
	case "documents":
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
	case "templates", "content-library-items":
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
