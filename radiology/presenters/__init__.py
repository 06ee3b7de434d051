"""Presenters: the data a page (and its script) shows, assembled from selectors, with the display words of
radiology.templatetags. Views call a presenter and render or answer JSON; they do not assemble pages."""
