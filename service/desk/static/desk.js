(function(){
  var typing=function(e){var t=e.target.tagName;return t==='INPUT'||t==='SELECT'||t==='TEXTAREA'||e.ctrlKey||e.metaKey||e.altKey;};
  var rows=function(){return Array.prototype.slice.call(document.querySelectorAll('[data-row]'));};
  var sel=-1;
  function select(i){var r=rows();if(!r.length)return;sel=Math.max(0,Math.min(r.length-1,i));
    r.forEach(function(x,j){x.classList.toggle('sel',j===sel);});r[sel].scrollIntoView({block:'nearest'});
    var a=r[sel].querySelector('a');if(a)a.focus({preventScroll:true});}
  document.addEventListener('keydown',function(e){
    if(typing(e))return;var k=e.key;
    if(document.getElementById('verdict-form')){
      if(k==='j'){var n=document.getElementById('next');if(n){location.href=n.href;}e.preventDefault();}
      else if(k==='k'){var p=document.getElementById('prev');if(p){location.href=p.href;}e.preventDefault();}
      else if(k==='a'){document.getElementById('accept-form').submit();e.preventDefault();}
      else if(k==='s'){document.getElementById('section').focus();e.preventDefault();}
      else if(k==='t'){document.getElementById('add-tag').focus();e.preventDefault();}
      return;}
    if(k==='j'){select(sel+1);e.preventDefault();}
    else if(k==='k'){select(sel<0?0:sel-1);e.preventDefault();}
    else if(k==='Enter'&&sel>=0){var a=rows()[sel].querySelector('a');if(a)location.href=a.href;}
    else if(k==='/'){var s=document.getElementById('search');if(s){s.focus();e.preventDefault();}}
  });
  var feed=document.getElementById('feed');
  if(feed&&window.EventSource){
    var live=document.getElementById('live');var source=new EventSource(feed.getAttribute('data-events'));
    source.onopen=function(){live.textContent='live';live.classList.remove('off');};
    source.onerror=function(){live.textContent='reconnecting…';live.classList.add('off');};
    source.addEventListener('article',function(m){
      var box=document.createElement('ol');box.innerHTML=m.data;var row=box.firstElementChild;if(!row)return;
      var old=feed.querySelector('[data-id="'+CSS.escape(row.getAttribute('data-id'))+'"]');if(old)old.remove();
      feed.insertBefore(row,feed.firstChild);if(sel>=0)sel+=1;
      while(feed.children.length>200)feed.removeChild(feed.lastChild);});
  }
})();
