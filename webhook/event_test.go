package webhook_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/gopandadoc/pandadocauth/pandadoctest"
	"github.com/gopandadoc/pandadocauth/webhook"
)

// stateChanged is the request_body of the example delivery in
// PandaDoc's API reference for GET /public/v1/webhook-events/{id}.
const stateChanged = `[{"event":"document_state_changed","data":{"id":"aahcZhiB6pKRbjagoZrrrr","name":"Document from PandaDoc Template","date_created":"2024-07-31T16:06:09.114744Z","date_modified":"2024-07-31T16:06:09.157758Z","expiration_date":null,"autonumbering_sequence_name":null,"created_by":{"id":"FA5QAu8UGA3oVDQZuPL7rr","email":"test@pandadoc.com","first_name":"FirstName","last_name":"LastName","avatar":null,"membership_id":"RyMNXBjBPRppw56TfYBrrr"},"tags":["created_via_api"],"status":"document.draft","recipients":[{"type":"recipient","id":"TM2nqhKYgPmJA9hUPDKHrr","first_name":"Josh","last_name":"Ron","email":"josh@example.com","phone":"","recipient_type":"CC","has_completed":false,"role":"","roles":[],"signing_order":null,"contact_id":"DrNfkrquTcXH83cgF5ZGrr","shared_link":""}],"sent_by":null,"grand_total":{"amount":"0.00","currency":"EUR"},"template":{"id":"7Xfnrk7dTaWJ78wNUrg3rr","name":"Sample Template"},"version":"2","linked_objects":[]}}]`

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		body  string
		types []string // the events' types, in order
	}{
		{"PandaDoc's example", stateChanged, []string{"document_state_changed"}},
		{"several, in order", `[{"event":"recipient_completed","data":{}},{"event":"document_state_changed","data":{}},{"event":"document_completed_pdf_ready","data":{}}]`,
			[]string{"recipient_completed", "document_state_changed", "document_completed_pdf_ready"}},
		{"unknown event type", `[{"event":"document_teleported","data":{"id":"x","where":"mars"}}]`, []string{"document_teleported"}},
		{"unknown fields around the event", `[{"event":"document_deleted","data":{"id":"x"},"webhook_version":3,"extra":{"a":[1,2]}}]`, []string{"document_deleted"}},
		{"no data", `[{"event":"template_deleted"}]`, []string{"template_deleted"}},
		{"whitespace around", " \n\t[{\"event\":\"quote_updated\",\"data\":{}}]\r\n", []string{"quote_updated"}},
		{"empty array", `[]`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			events, err := webhook.Parse([]byte(tt.body))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			var types []string
			for _, e := range events {
				types = append(types, e.Event)
			}
			if !slices.Equal(types, tt.types) {
				t.Errorf("types %q, want %q", types, tt.types)
			}
		})
	}
	t.Run("unknown event keeps its data", func(t *testing.T) {
		events, err := webhook.Parse([]byte(`[{"event":"document_teleported","data":{"id":"x","where":"mars"}}]`))
		if err != nil || string(events[0].Data) != `{"id":"x","where":"mars"}` {
			t.Errorf("Parse = %+v, %v", events, err)
		}
	})
}

func TestParseMalformed(t *testing.T) {
	t.Parallel()
	for _, body := range []string{
		``, ` `, `null`, `{}`, `{"event":"document_state_changed","data":{}}`, `"[]"`, `[1]`, `[[]]`,
		`[{"event":"document_state_changed","data":{}}`, `[{"event":5,"data":{}}]`, `[{"event":"x","data":{}}] trailing`, "\xff",
	} {
		events, err := webhook.Parse([]byte(body))
		if !errors.Is(err, webhook.ErrMalformed) || events != nil {
			t.Errorf("Parse(%q) = %v, %v; want ErrMalformed", body, events, err)
		}
	}
}

func TestDocument(t *testing.T) {
	t.Parallel()
	events, err := webhook.Parse([]byte(stateChanged))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := events[0].Document()
	if err != nil {
		t.Fatal(err)
	}
	want := &webhook.Document{
		ID:           "aahcZhiB6pKRbjagoZrrrr",
		Name:         "Document from PandaDoc Template",
		Status:       webhook.StatusDraft,
		DateCreated:  time.Date(2024, 7, 31, 16, 6, 9, 114744000, time.UTC),
		DateModified: time.Date(2024, 7, 31, 16, 6, 9, 157758000, time.UTC),
		CreatedBy: &webhook.User{ID: "FA5QAu8UGA3oVDQZuPL7rr", Email: "test@pandadoc.com", FirstName: "FirstName",
			LastName: "LastName", MembershipID: "RyMNXBjBPRppw56TfYBrrr"},
		Recipients: []webhook.Recipient{{ID: "TM2nqhKYgPmJA9hUPDKHrr", Type: "recipient", FirstName: "Josh", LastName: "Ron",
			Email: "josh@example.com", RecipientType: "CC", Roles: []string{}, ContactID: "DrNfkrquTcXH83cgF5ZGrr"}},
		GrandTotal:    &webhook.Money{Amount: "0.00", Currency: "EUR"},
		Template:      &webhook.TemplateRef{ID: "7Xfnrk7dTaWJ78wNUrg3rr", Name: "Sample Template"},
		Version:       "2",
		Tags:          []string{"created_via_api"},
		LinkedObjects: []webhook.LinkedObject{},
		Raw:           events[0].Data,
	}
	if !reflect.DeepEqual(doc, want) {
		t.Errorf("Document =\n%+v\nwant\n%+v", doc, want)
	}
}

func TestDocumentRecipientCompleted(t *testing.T) {
	t.Parallel()
	body := pandadoctest.WebhookBody(pandadoctest.RecipientCompleted("doc1", "pat@example.com"))
	events, err := webhook.Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := events[0].Document()
	if err != nil {
		t.Fatal(err)
	}
	if events[0].Event != webhook.EventRecipientCompleted || doc.ID != "doc1" || doc.ActionBy == nil || doc.ActionBy.Email != "pat@example.com" ||
		doc.ActionDate == nil || doc.ActionDate.IsZero() || len(doc.Unparsed) != 0 {
		t.Errorf("recipient_completed decoded as %s %+v (action by %+v)", events[0].Event, doc, doc.ActionBy)
	}
	if len(doc.Recipients) != 1 || !doc.Recipients[0].HasCompleted {
		t.Errorf("recipients %+v, want the one who completed", doc.Recipients)
	}
}

// TestDocumentLenient checks that a known field of an unexpected type
// costs that field only, and that unknown fields are kept in Raw.
func TestDocumentLenient(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		data     string
		check    func(*webhook.Document) bool
		unparsed []string
	}{
		{"version as a number", `{"id":"d","status":"document.sent","version":2}`,
			func(d *webhook.Document) bool {
				return d.ID == "d" && d.Status == webhook.StatusSent && d.Version == ""
			}, []string{"version"}},
		{"a date PandaDoc never sent", `{"id":"d","date_created":"yesterday","date_modified":"2024-07-31T16:06:09Z"}`,
			func(d *webhook.Document) bool { return d.DateCreated.IsZero() && d.DateModified.Year() == 2024 }, []string{"date_created"}},
		{"a recipient field of another type keeps the rest", `{"id":"d","recipients":[{"email":"a@example.com","signing_order":"1"}]}`,
			func(d *webhook.Document) bool {
				return len(d.Recipients) == 1 && d.Recipients[0].Email == "a@example.com"
			}, []string{"recipients"}},
		{"action_by as a string", `{"id":"d","action_by":"a@example.com","action_date":"2024-07-31T16:06:09Z"}`,
			func(d *webhook.Document) bool { return d.ActionBy == nil && d.ActionDate != nil }, []string{"action_by"}},
		{"nulls everywhere", `{"id":"d","name":null,"created_by":null,"recipients":null,"grand_total":null,"template":null,"tags":null,"expiration_date":null}`,
			func(d *webhook.Document) bool { return d.ID == "d" && d.CreatedBy == nil && d.Template == nil }, nil},
		{"unknown fields", `{"id":"d","fields":{"f1":{"value":"x"}},"tokens":[{"name":"t","value":"v"}],"pricing":{"total":"1"},"future":true}`,
			func(d *webhook.Document) bool { return d.ID == "d" }, nil},
		{"metadata of any shape", `{"id":"d","metadata":{"crm_id":"42","n":7,"nested":{"a":[1]}}}`,
			func(d *webhook.Document) bool { return d.Metadata["crm_id"] == "42" && d.Metadata["n"] == 7.0 }, nil},
		{"linked objects", `{"id":"d","linked_objects":[{"id":"l","provider":"hubspot","entity_type":"deal","entity_id":"9"}]}`,
			func(d *webhook.Document) bool {
				return len(d.LinkedObjects) == 1 && d.LinkedObjects[0].Provider == "hubspot"
			}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := webhook.Event{Event: webhook.EventDocumentUpdated, Data: json.RawMessage(tt.data)}
			d, err := e.Document()
			if err != nil {
				t.Fatalf("Document: %v", err)
			}
			if !tt.check(d) {
				t.Errorf("decoded %+v", d)
			}
			if !slices.Equal(d.Unparsed, tt.unparsed) {
				t.Errorf("Unparsed %q, want %q", d.Unparsed, tt.unparsed)
			}
			if string(d.Raw) != tt.data {
				t.Errorf("Raw %s, want the data as sent", d.Raw)
			}
		})
	}
}

func TestTypedDataNotAnObject(t *testing.T) {
	t.Parallel()
	for _, data := range []string{``, `null`, `[]`, `"x"`, `1`, `{`} {
		e := webhook.Event{Event: webhook.EventDocumentStateChanged, Data: json.RawMessage(data)}
		if _, err := e.Document(); !errors.Is(err, webhook.ErrMalformed) {
			t.Errorf("Document of %q: %v, want ErrMalformed", data, err)
		}
		if _, err := e.Template(); !errors.Is(err, webhook.ErrMalformed) {
			t.Errorf("Template of %q: %v, want ErrMalformed", data, err)
		}
		if _, err := e.ContentLibraryItem(); !errors.Is(err, webhook.ErrMalformed) {
			t.Errorf("ContentLibraryItem of %q: %v, want ErrMalformed", data, err)
		}
	}
}

// TestEveryEventType decodes one delivery of each event type of
// PandaDoc's specification with the accessor that fits it.
func TestEveryEventType(t *testing.T) {
	t.Parallel()
	documents := []string{
		webhook.EventDocumentStateChanged, webhook.EventDocumentUpdated, webhook.EventDocumentDeleted,
		webhook.EventDocumentCreationFailed, webhook.EventDocumentCompletedPDFReady, webhook.EventDocumentSectionAdded,
		webhook.EventRecipientCompleted, webhook.EventQuoteUpdated,
	}
	var events []pandadoctest.WebhookEvent
	for _, typ := range documents {
		events = append(events, pandadoctest.DocumentEvent(typ, "doc-"+typ, "document.sent"))
	}
	for _, typ := range []string{webhook.EventTemplateCreated, webhook.EventTemplateUpdated, webhook.EventTemplateDeleted} {
		events = append(events, pandadoctest.WebhookEvent{Event: typ, Data: map[string]any{
			"id": "tpl-" + typ, "name": "Quote template", "date_created": "2026-07-20T09:30:00Z", "date_modified": "2026-07-20T09:31:00.5Z", "tags": []string{"sales"},
		}})
	}
	for _, typ := range []string{webhook.EventContentLibraryItemCreated, webhook.EventContentLibraryItemCreationFailed} {
		events = append(events, pandadoctest.WebhookEvent{Event: typ, Data: map[string]any{
			"id": "cli-" + typ, "name": "Pricing block", "date_created": "2026-07-20T09:30:00Z", "status": "processed",
		}})
	}
	parsed, err := webhook.Parse(pandadoctest.WebhookBody(events...))
	if err != nil || len(parsed) != 13 {
		t.Fatalf("Parse: %d events, %v; want 13", len(parsed), err)
	}
	for _, e := range parsed {
		var id string
		var unparsed []string
		switch e.Event {
		case webhook.EventTemplateCreated, webhook.EventTemplateUpdated, webhook.EventTemplateDeleted:
			tpl, err := e.Template()
			if err != nil {
				t.Fatalf("%s: %v", e.Event, err)
			}
			id, unparsed = tpl.ID, tpl.Unparsed
			if tpl.DateModified.IsZero() || len(tpl.Tags) != 1 {
				t.Errorf("%s: %+v", e.Event, tpl)
			}
		case webhook.EventContentLibraryItemCreated, webhook.EventContentLibraryItemCreationFailed:
			c, err := e.ContentLibraryItem()
			if err != nil {
				t.Fatalf("%s: %v", e.Event, err)
			}
			id, unparsed = c.ID, c.Unparsed
			if c.Status != "processed" || c.DateCreated.IsZero() {
				t.Errorf("%s: %+v", e.Event, c)
			}
		default:
			doc, err := e.Document()
			if err != nil {
				t.Fatalf("%s: %v", e.Event, err)
			}
			id, unparsed = doc.ID, doc.Unparsed
			if doc.Status != webhook.StatusSent || doc.CreatedBy == nil || doc.GrandTotal == nil || doc.DateModified.IsZero() {
				t.Errorf("%s: %+v", e.Event, doc)
			}
		}
		if id == "" || len(unparsed) != 0 {
			t.Errorf("%s: id %q, unparsed %q", e.Event, id, unparsed)
		}
	}
}
