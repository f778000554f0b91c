package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// The event types of PandaDoc's webhooks (WebhookEventTriggerEnum in
// PandaDoc's OpenAPI specification). PandaDoc adds new ones from time to
// time; Parse keeps any type, known or not.
const (
	EventDocumentStateChanged             = "document_state_changed"
	EventDocumentUpdated                  = "document_updated"
	EventDocumentDeleted                  = "document_deleted"
	EventDocumentCreationFailed           = "document_creation_failed"
	EventDocumentCompletedPDFReady        = "document_completed_pdf_ready"
	EventDocumentSectionAdded             = "document_section_added"
	EventRecipientCompleted               = "recipient_completed"
	EventQuoteUpdated                     = "quote_updated"
	EventTemplateCreated                  = "template_created"
	EventTemplateUpdated                  = "template_updated"
	EventTemplateDeleted                  = "template_deleted"
	EventContentLibraryItemCreated        = "content_library_item_created"
	EventContentLibraryItemCreationFailed = "content_library_item_creation_failed"
)

// ErrMalformed means a body or an event's data is not the JSON PandaDoc
// sends: Parse wants an array of objects, the typed accessors of Event an
// object.
var ErrMalformed = errors.New("webhook: malformed payload")

// An Event is one notification of a delivery. PandaDoc's body is a JSON
// array of them, such as
//
//	[{"event":"document_state_changed","data":{"id":"…","status":"document.completed",…}}]
//
// Event is the type, one of the Event constants or a newer one, and Data
// the data object as sent. Document, Template and ContentLibraryItem
// decode Data.
type Event struct {
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

// Parse decodes a delivery's body into its events, in order. Unknown
// event types and unknown fields are kept, never an error: PandaDoc adds
// them. A body that is not a JSON array of objects is an error wrapping
// ErrMalformed. Verify the body first: Parse trusts it.
func Parse(body []byte) ([]Event, error) {
	if b := bytes.TrimLeft(body, " \t\r\n"); len(b) == 0 || b[0] != '[' {
		return nil, fmt.Errorf("%w: the body is not a JSON array", ErrMalformed)
	}
	var events []Event
	if err := json.Unmarshal(body, &events); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return events, nil
}
