/* Orthanc Explorer extension of the AusCAT layer: a request the user's role refuses (HTTP 403) is shown in a
   banner at the top of the page, instead of the page staying silent (its Delete button, for one, has no error
   handler). Nothing is retried and nothing else changes. */
(function () {
  function showRefusal(method, url) {
    var banner = $('#auscat-refusal');
    if (banner.length === 0) {
      banner = $('<div id="auscat-refusal" role="alert"></div>').css({
        position: 'fixed', top: 0, left: 0, right: 0, 'z-index': 10000, padding: '12px',
        background: '#b00020', color: '#ffffff', 'font-weight': 'bold', 'text-align': 'center'
      }).appendTo('body');
      banner.on('click', function () { banner.hide(); });
    }
    var path = String(url).split('?')[0].replace(/^(\.\.\/)+/, '/').replace(/^\.\.(?=\/)/, '');
    banner.text('Refused: your role does not allow ' + method + ' ' + path +
                ' (HTTP 403). Nothing was changed.').show();
  }

  $(document).ajaxError(function (event, xhr, settings) {
    if (xhr.status === 403) {
      showRefusal(settings.type || 'GET', settings.url);
    }
  });
})();
